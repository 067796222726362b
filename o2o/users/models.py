"""Users, their roles, and the stores a pharmacist works at."""

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, LargeBinary, String, Table, func, text
from sqlalchemy.dialects.postgresql import ENUM
from sqlalchemy.orm import Mapped, mapped_column, relationship

from o2o.db import Base


class Role(enum.StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"
    PHARMACIST = "pharmacist"
    COURIER = "courier"
    ADMIN = "admin"
    # Hands parcels over at a community pickup point and earns a commission on them.
    LEADER = "leader"


role_enum = ENUM(Role, name="user_role", values_callable=lambda e: [m.value for m in e])

# Which stores a pharmacist (store staff) works at. `stores.id` is named by string: the stores
# domain sits above the core and the core never imports it.
user_stores = Table(
    "user_stores",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("uq_users_email_lower", func.lower(text("email")), unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(role_enum)
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    # Raised on a password change, a deactivation or a reactivation: every bearer token and
    # console session carries the version it was issued under and is refused once it differs.
    token_version: Mapped[int] = mapped_column(server_default=text("0"))
    # The admin who created the account (none for sign-ups and the command line): another admin
    # must approve a doctor's signing key.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The console language the user chose (a locale of o2o.i18n.SUPPORTED); null follows the
    # browser's Accept-Language.
    language: Mapped[str | None] = mapped_column(String(16))

    store_links = relationship("UserStoreLink", viewonly=True, lazy="selectin")

    @property
    def store_ids(self) -> list[int]:
        return sorted(link.store_id for link in self.store_links)


class UserStoreLink(Base):
    """Read-only mapping of user_stores, so `User.store_ids` loads without the stores domain."""

    __table__ = user_stores


class PasswordResetToken(Base):
    """A one-time password reset token: only its SHA-256 is kept, never the token itself.

    Valid while unused, unexpired, and issued under the user's current token version (a password
    change, a deactivation or another reset raises it, so every outstanding token dies with it).
    """

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    token_version: Mapped[int]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
