from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictInt

from o2o.users.models import Role

Password = Field(min_length=8, max_length=128)


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
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


class UserStatusOut(UserOut):
    is_active: bool


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
