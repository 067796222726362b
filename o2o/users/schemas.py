from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from o2o.errors import rule_error
from o2o.i18n import gettext as _
from o2o.users.models import Role

Password = Field(min_length=8, max_length=128)


def _email(value: str) -> str:
    """An address in e-mail syntax (the schema's `format: email`) at a domain mail can reach."""
    domain = value.rpartition("@")[2].lower()
    if any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES):
        raise _undeliverable("the part after the @-sign is a special-use or reserved name")
    try:
        address = validate_email(value, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise _undeliverable(str(exc)) from None
    return address.normalized


def _undeliverable(reason: str) -> Exception:
    # Well formed, but no mail can reach it (.test, .local, no top-level domain), which the
    # schema's format cannot say: a code of its own.
    return rule_error(
        "undeliverable_email", _("no mail can reach this address: {reason}").format(reason=reason)
    )


Email = Annotated[str, AfterValidator(_email), Field(json_schema_extra={"format": "email"})]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: str = Password
    name: str = Field(min_length=1, max_length=200)


class UserCreateIn(RegisterIn):
    role: Role
    store_ids: list[StrictInt] = Field(default_factory=list, max_length=1000)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    role: Role


class MeOut(UserOut):
    store_ids: list[int]


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Password


class PasswordResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Any address an account may hold (accounts created before the stricter sign-up check
    # included): the answer is the same for every address, known or not.
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


class PasswordResetAcceptedOut(BaseModel):
    status: str = "accepted"
    message: str = "If an active account has this address, a password reset message is on its way."


class PasswordResetConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=128)
    new_password: str = Password


class UserStatusOut(UserOut):
    is_active: bool


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
