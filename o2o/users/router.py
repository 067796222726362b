from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status

from o2o import ratelimit
from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.i18n import gettext as _
from o2o.security import create_access_token
from o2o.users import reset, service
from o2o.users.dependencies import AdminUser, CurrentUser, client_ip
from o2o.users.models import Role
from o2o.users.schemas import (
    MeOut,
    PasswordChangeIn,
    PasswordResetAcceptedOut,
    PasswordResetConfirmIn,
    PasswordResetIn,
    RegisterIn,
    TokenOut,
    UserCreateIn,
    UserOut,
    UserStatusOut,
)

router = APIRouter(route_class=ApiRoute, tags=["auth and users"])


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=error_responses(
        e422=("undeliverable_email",),
        e409="email_taken",
        e429="rate_limited: too many sign-ups from this address",
    ),
)
def register(body: RegisterIn, session: DbSession, ip: Annotated[str, Depends(client_ip)]):
    """Sign up as a patient."""
    ratelimit.hit(
        ratelimit.limit(get_settings().register_rate_limit),
        "register-ip",
        ip,
        message=_("Too many sign-ups from this address; try again later."),
    )
    return service.create_user(
        session, email=body.email, password=body.password, name=body.name, role=Role.PATIENT
    )


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses=error_responses(
        e401="invalid_credentials",
        e429="rate_limited: too many failed sign-ins for this account or address",
    ),
)
def token(
    session: DbSession,
    username: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=128)],
    ip: Annotated[str, Depends(client_ip)],
):
    """Exchange email and password for a bearer token (OAuth2 password flow)."""
    user = service.authenticate(session, username, password, ip)
    minutes = get_settings().access_token_minutes
    return TokenOut(
        access_token=create_access_token(
            str(user.id), role=user.role.value, minutes=minutes, version=user.token_version
        ),
        expires_in=minutes * 60,
    )


@router.get("/users/me", response_model=MeOut)
def me(user: CurrentUser):
    """Return the signed-in user."""
    return user


@router.post(
    "/admin/users",
    status_code=status.HTTP_201_CREATED,
    response_model=MeOut,
    responses=error_responses(
        e422=("store_ids_not_allowed", "unknown_store", "undeliverable_email"), e409="email_taken"
    ),
)
def create_user(body: UserCreateIn, session: DbSession, admin: AdminUser):
    """Create a doctor, pharmacist (with store ids), courier, admin or patient."""
    return service.create_user(
        session,
        email=body.email,
        password=body.password,
        name=body.name,
        role=body.role,
        store_ids=body.store_ids,
        created_by=admin.id,
    )


@router.post(
    "/users/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(e422=("wrong_current_password", "password_unchanged")),
)
def change_password(body: PasswordChangeIn, session: DbSession, user: CurrentUser):
    """Change your password; every token and console session issued before stops working."""
    service.change_password(session, user, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PasswordResetAcceptedOut,
    responses=error_responses(
        e429="rate_limited: too many reset requests for this address or from this client"
    ),
)
def request_password_reset(
    body: PasswordResetIn, session: DbSession, ip: Annotated[str, Depends(client_ip)]
):
    """Ask for a password reset message; the answer is the same whether or not the account exists."""
    settings = get_settings()
    message = "Too many password reset requests; try again later."
    ratelimit.hit(
        ratelimit.limit(settings.password_reset_address_rate_limit),
        "password-reset-ip",
        ip,
        message=message,
    )
    ratelimit.hit(
        ratelimit.limit(settings.password_reset_email_rate_limit),
        "password-reset-email",
        body.email.strip().lower(),
        message=message,
    )
    reset.request_reset(session, body.email)
    return PasswordResetAcceptedOut()


@router.post(
    "/users/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        e422={
            "invalid_reset_token": "the token was used, expired, replaced by a newer one or "
            "never issued, or its account was deactivated or changed its password since",
            "password_unchanged": "the new password is the current one",
        }
    ),
)
def confirm_password_reset(body: PasswordResetConfirmIn, session: DbSession):
    """Set a new password with a reset token; every earlier token and console session stops."""
    reset.confirm_reset(session, body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/admin/users/{user_id}/deactivate",
    response_model=UserStatusOut,
    responses=error_responses(e404="user_not_found", e422=("own_account",)),
)
def deactivate_user(user_id: int, session: DbSession, admin: AdminUser):
    """Deactivate an account: its tokens and console sessions are refused from the next request."""
    return service.set_active(session, admin, user_id, active=False)


@router.post(
    "/admin/users/{user_id}/reactivate",
    response_model=UserStatusOut,
    responses=error_responses(e404="user_not_found", e422=("own_account",)),
)
def reactivate_user(user_id: int, session: DbSession, admin: AdminUser):
    """Reactivate an account; it signs in again (earlier tokens stay revoked)."""
    return service.set_active(session, admin, user_id, active=True)
