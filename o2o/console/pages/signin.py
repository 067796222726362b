"""Sign-in pages: the home redirect, the login form, sign-out."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response

from o2o import i18n
from o2o.api import ApiRoute
from o2o.console.auth import (
    LANGUAGE_COOKIE,
    ConsoleSessionDep,
    csrf_protect,
    safe_next,
    sign_in,
)
from o2o.console.pages.common import notice, redirect
from o2o.console.rendering import console_url, render
from o2o.db import DbSession
from o2o.errors import DomainError, RateLimited
from o2o.i18n import gettext as _
from o2o.users.models import Role, User

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


@router.get("/", name="home")
def home(request: Request, db: DbSession, session: ConsoleSessionDep) -> Response:
    """Send each user to where their work is."""
    if session.uid is None:
        return redirect(console_url(request, "login_form"))
    user = db.get(User, session.uid)
    if user is None or not user.is_active:
        return redirect(console_url(request, "login_form"))
    if user.role is Role.DOCTOR:
        return redirect(console_url(request, "doctor_queue"))
    if user.role is Role.PHARMACIST and len(user.store_ids) == 1:
        return redirect(console_url(request, "orders_board", store_id=user.store_ids[0]))
    return redirect(console_url(request, "store_list"))


@router.get("/login", name="login_form")
def login_form(
    request: Request,
    next: Annotated[str | None, Query(max_length=500)] = None,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Show the sign-in form."""
    return render(
        request,
        "login.html",
        {"next_url": safe_next(next), "notice": notice(done), "title": _("Sign in")},
    )


@router.post("/login", name="login")
def login(
    request: Request,
    db: DbSession,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=128)],
    next: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    """Sign in with the API's email and password (same rate limits); staff and doctors only."""
    try:
        user = sign_in(db, request, email, password)
    except DomainError as exc:
        headers = exc.headers if isinstance(exc, RateLimited) else None
        return render(
            request,
            "login.html",
            {"login_error": exc.message, "email": email, "next_url": safe_next(next)},
            status_code=exc.status_code,
            headers=headers,
        )
    # A language picked on the sign-in page becomes the user's choice, unless one is stored.
    chosen = i18n.normalize(request.cookies.get(LANGUAGE_COOKIE))
    if user.language is None and chosen is not None:
        user.language = chosen
    return redirect(safe_next(next))


@router.post("/logout", name="logout")
def logout(request: Request, session: ConsoleSessionDep) -> Response:
    """Sign out and forget this session."""
    session.end()
    return redirect(console_url(request, "login_form") + "?done=signed_out")
