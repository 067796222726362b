"""Console sign-in: a signed session cookie, CSRF tokens on every form, and who may see what.

The session lives in a cookie signed with the secret key (itsdangerous): the user id, a random
session id, the CSRF token and the sign-in time. It expires after IDLE_SECONDS without a request
and ABSOLUTE_SECONDS after sign-in whatever the activity. Sign-out also writes the session id to
a Redis deny list, so a copied cookie stops working at once rather than when it times out.
"""

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from o2o import i18n
from o2o.config import get_settings
from o2o.db import DbSession
from o2o.errors import DomainError, Forbidden, NotFound
from o2o.i18n import gettext
from o2o.redis import get_redis
from o2o.users import service as users_service
from o2o.users.dependencies import client_ip
from o2o.users.models import Role, User

COOKIE_NAME = "o2o_console"
# The language chosen with the switch (o2o.console.pages.language), for pages before sign-in.
LANGUAGE_COOKIE = "o2o_lang"
COOKIE_PATH = "/console"
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 10 * 60 * 60
# Re-sign the cookie (sliding the idle window) at most this often, not on every request.
REFRESH_AFTER_SECONDS = 60
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CONSOLE_ROLES = frozenset({Role.PHARMACIST, Role.DOCTOR, Role.ADMIN})
STORE_ROLES = frozenset({Role.PHARMACIST, Role.ADMIN})
_REVOKED_PREFIX = "o2o:console-revoked:"
_SALT = "o2o.console.session"

log = logging.getLogger(__name__)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().key("session_secret_key"), salt=_SALT)


def secure_cookie() -> bool:
    """Say whether cookies are sent over HTTPS only (everywhere but development and test)."""
    return get_settings().env not in ("development", "test")


@dataclass
class ConsoleSession:
    """What the cookie carries; `changed` makes the middleware send a fresh cookie."""

    sid: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    uid: int | None = None
    ver: int = 0
    login_at: float | None = None
    signed_at: float = 0.0
    changed: bool = True
    cleared: bool = False

    def start(self, user: User) -> None:
        """Begin a signed-in session: new id and CSRF token, so a planted cookie is worthless."""
        self.sid = secrets.token_urlsafe(16)
        self.csrf = secrets.token_urlsafe(32)
        self.uid = user.id
        self.ver = user.token_version
        self.login_at = time.time()
        self.changed = True

    def end(self) -> None:
        """Sign out: deny this session id from now on and drop the cookie."""
        _revoke(self.sid)
        self.uid = None
        self.login_at = None
        self.sid = secrets.token_urlsafe(16)
        self.csrf = secrets.token_urlsafe(32)
        self.changed = True
        self.cleared = True

    def dump(self) -> str:
        data = {
            "sid": self.sid,
            "csrf": self.csrf,
            "uid": self.uid,
            "ver": self.ver,
            "login_at": self.login_at,
        }
        return _serializer().dumps(data)


def _revoke(sid: str) -> None:
    try:
        get_redis().set(_REVOKED_PREFIX + sid, b"1", ex=ABSOLUTE_SECONDS)
    except Exception:
        log.warning("could not record console sign-out; the cookie is still cleared")


def _is_revoked(sid: str) -> bool:
    try:
        return bool(get_redis().exists(_REVOKED_PREFIX + sid))
    except Exception:
        # Same choice as the rate limits: a Redis restart must not sign every pharmacist out.
        log.warning("could not check console sign-outs; accepting the signed cookie")
        return False


def load_session(raw: str | None) -> ConsoleSession:
    """Decode a cookie value; anything unsigned, expired or signed out becomes a new session."""
    if not raw:
        return ConsoleSession()
    try:
        data, signed_at = _serializer().loads(raw, max_age=IDLE_SECONDS, return_timestamp=True)
    except (BadSignature, SignatureExpired):
        return ConsoleSession()
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        return ConsoleSession()
    session = ConsoleSession(
        sid=data["sid"],
        csrf=str(data.get("csrf") or ""),
        uid=data.get("uid") if isinstance(data.get("uid"), int) else None,
        ver=data.get("ver") if isinstance(data.get("ver"), int) else 0,
        login_at=data.get("login_at"),
        signed_at=signed_at.timestamp(),
        changed=False,
    )
    if not session.csrf:
        return ConsoleSession()
    if session.uid is not None:
        too_old = session.login_at is None or time.time() - session.login_at > ABSOLUTE_SECONDS
        if too_old or _is_revoked(session.sid):
            return ConsoleSession()
        if time.time() - session.signed_at > REFRESH_AFTER_SECONDS:
            session.changed = True
    return session


def _cookie_header(session: ConsoleSession) -> bytes:
    parts = [f"{COOKIE_NAME}={session.dump()}", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Lax"]
    parts.append(f"Max-Age={IDLE_SECONDS}")
    if secure_cookie():
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def _cookie_value(scope: Scope, cookie: str = COOKIE_NAME) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                if name == cookie:
                    return val
    return None


class ConsoleSessionMiddleware:
    """Load the console session into request.state and send the cookie back when it changed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Static files need no session: skip the signature check and the Redis sign-out lookup.
        if scope["type"] != "http" or "/static/" in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        session = load_session(_cookie_value(scope))
        scope.setdefault("state", {})["console_session"] = session
        # The switch's cookie beats Accept-Language; the user's own choice beats both (applied
        # once the user is loaded, in _signed_in_user).
        chosen = i18n.normalize(_cookie_value(scope, LANGUAGE_COOKIE))
        if chosen is not None:
            i18n.set_locale(chosen)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and session.changed:
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", _cookie_header(session)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def current_session(request: Request) -> ConsoleSession:
    """Return this request's console session (set by the middleware)."""
    return request.state.console_session


ConsoleSessionDep = Annotated[ConsoleSession, Depends(current_session)]


@dataclass(frozen=True)
class Viewer:
    """Who is signed in, as the page frame shows it."""

    id: int
    name: str
    role: Role


class CsrfRefused(Forbidden):
    code = "csrf_failed"


async def csrf_protect(request: Request) -> None:
    """Refuse (403) a state-changing request without this session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    session = current_session(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not given or not secrets.compare_digest(given.encode(), session.csrf.encode()):
        raise CsrfRefused(
            gettext(
                "This form has expired or did not come from the console; reload the page and try again."
            )
        )


class LoginRequired(DomainError):
    """Raised when a page needs a signed-in console user; answered with a redirect."""

    status_code = 401
    code = "not_authenticated"


def sign_in(session: Session, request: Request, email: str, password: str) -> User:
    """Check credentials (with the API's rate limits) and refuse roles that have no console."""
    user = users_service.authenticate(session, email, password, client_ip(request))
    if user.role not in CONSOLE_ROLES:
        raise Forbidden(
            gettext(
                "The console is for pharmacists and doctors. Patients and couriers use the app."
            ),
            code="console_role_refused",
        )
    current_session(request).start(user)
    return user


def _signed_in_user(request: Request, db: DbSession) -> User:
    session = current_session(request)
    if session.uid is None:
        raise LoginRequired(gettext("Sign in to continue."))
    user = db.get(User, session.uid)
    stale = user is not None and user.token_version != session.ver
    if user is None or not user.is_active or user.role not in CONSOLE_ROLES or stale:
        session.end()
        raise LoginRequired(gettext("Your session has ended; sign in again."))
    if user.language:
        i18n.set_locale(user.language)
    # A plain copy for the page frame: an error page is rendered after the request's session
    # has rolled back and closed, when the ORM object can no longer be read.
    request.state.console_user = Viewer(user.id, user.name, user.role)
    return user


ConsoleUser = Annotated[User, Depends(_signed_in_user)]


def _staff_user(user: ConsoleUser) -> User:
    if user.role not in STORE_ROLES:
        raise Forbidden(gettext("Store pages are for pharmacists."), code="not_store_staff")
    return user


def _doctor_user(user: ConsoleUser) -> User:
    if user.role is not Role.DOCTOR:
        raise Forbidden(gettext("Doctor pages are for doctors."), code="not_a_doctor")
    return user


StaffUser = Annotated[User, Depends(_staff_user)]
DoctorUser = Annotated[User, Depends(_doctor_user)]


def can_see_store(user: User, store_id: int) -> bool:
    """Say whether a console user may see a store's pages (admins see every store)."""
    return user.role is Role.ADMIN or store_id in user.store_ids


def check_store(user: User, store_id: int) -> None:
    """Refuse with 404 a store the user does not work at (its existence is not revealed)."""
    if not can_see_store(user, store_id):
        raise NotFound(gettext("No such store."), code="store_not_found")


def login_redirect_target(request: Request) -> str:
    """Where to send someone who must sign in first, remembering the page they asked for."""
    path = request.url.path
    if request.method == "GET" and not request.headers.get("hx-request"):
        return f"{COOKIE_PATH}/login?next={quote(path)}"
    return f"{COOKIE_PATH}/login"


def safe_next(target: Any) -> str:
    """Accept only console-local paths as a post-login destination (no open redirects)."""
    if (
        isinstance(target, str)
        and target.startswith(COOKIE_PATH + "/")
        and not target.startswith("//")
        and "\\" not in target
        and ".." not in target
    ):
        return target
    return COOKIE_PATH + "/"
