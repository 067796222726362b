"""The language switch: 中文 or English, remembered on the user and in a cookie.

The console's language is, first match wins: the signed-in user's choice (`users.language`), the
`o2o_lang` cookie (set by this switch, so the sign-in page keeps the language too), the browser's
Accept-Language, English.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from o2o import i18n
from o2o.api import ApiRoute
from o2o.console.auth import (
    COOKIE_PATH,
    LANGUAGE_COOKIE,
    ConsoleSessionDep,
    csrf_protect,
    safe_next,
    secure_cookie,
)
from o2o.console.pages.common import redirect
from o2o.db import DbSession
from o2o.errors import InvalidInput
from o2o.i18n import gettext as _
from o2o.users.models import User

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)

LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


@router.post("/language", name="set_language")
def set_language(
    request: Request,
    db: DbSession,
    session: ConsoleSessionDep,
    language: Annotated[str, Form(max_length=16)],
    next: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    """Switch the console's language; a signed-in user keeps it on every device."""
    if language not in i18n.SUPPORTED:
        raise InvalidInput(
            _("Choose one of the console's languages: {languages}.").format(
                languages=", ".join(i18n.SUPPORTED)
            ),
            code="unsupported_language",
        )
    if session.uid is not None:
        user = db.get(User, session.uid)
        if user is not None:
            user.language = language
    i18n.set_locale(language)
    response = redirect(safe_next(next))
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=LANGUAGE_COOKIE_SECONDS,
        path=COOKIE_PATH,
        secure=secure_cookie(),
        httponly=True,
        samesite="lax",
    )
    return response
