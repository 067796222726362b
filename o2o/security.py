"""Security primitives: argon2 password hashing and signed, expiring bearer tokens (JWT)."""

import secrets
from datetime import timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from o2o import clock
from o2o.config import get_settings

_hasher = PasswordHasher()
# Verified against when the account does not exist, so timing does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password against its hash in constant time (also when there is no account)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def create_access_token(
    subject: str, *, role: str, minutes: int | None = None, version: int = 0
) -> str:
    """Sign a bearer token for a user under their current token version."""
    settings = get_settings()
    now = clock.now()
    lifetime = timedelta(minutes=minutes if minutes is not None else settings.access_token_minutes)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(12),
        "typ": "access",
        "ver": version,
    }
    return jwt.encode(claims, settings.key("token_secret_key"), settings.jwt_algorithm)


class TokenError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_access_token(token: str) -> dict[str, Any]:
    """Return the claims of a valid token, or raise TokenError saying why it is refused."""
    settings = get_settings()
    try:
        claims = jwt.decode(
            token,
            settings.key("token_secret_key"),
            algorithms=[settings.jwt_algorithm],
            # Expiry is checked below against the platform's clock, as every other time is.
            options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError:
        raise TokenError("invalid") from None
    if claims.get("typ") != "access" or not isinstance(claims["exp"], int | float):
        raise TokenError("invalid")
    if claims["exp"] <= clock.now().timestamp():
        raise TokenError("expired")
    return claims


def new_code(digits: int = 6) -> str:
    """Return a random numeric code (pickup and delivery codes)."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def codes_equal(given: str, expected: str) -> bool:
    """Compare codes in constant time."""
    return secrets.compare_digest(given.encode(), expected.encode())
