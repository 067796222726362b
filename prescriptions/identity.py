"""Patients' identity numbers, stored only as a keyed hash with the version of the pepper it was
made with.

The number itself is never stored, so a stored hash cannot be re-made under a new pepper in bulk.
Rotation therefore works forward: new hashes use the current version, every lookup tries each
configured version, and a row is moved to the current version whenever the number is in hand
again (the patient gives it on a new request). An old version can be dropped once no row that
still needs matching uses it; rows left on a dropped version can no longer be matched
(docs/SECURITY.md, rotating the identity pepper).
"""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.orm import Session

from o2o.config import get_settings
from prescriptions import workflow
from prescriptions.models import Prescription

# Domain separation: the pepper keys this hash and nothing else.
MESSAGE_PREFIX = b"o2o:id-number:"


def _hmac(pepper: str, number: str) -> str:
    message = MESSAGE_PREFIX + workflow.normalise_id_number(number).encode()
    return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()


def hash_id_number(number: str) -> tuple[int, str]:
    """Hash an identity number with the current pepper; return (version, hash)."""
    settings = get_settings()
    return settings.identity_pepper_version, _hmac(settings.key("identity_pepper"), number)


def candidate_hashes(number: str) -> dict[int, str]:
    """Hash an identity number under every configured pepper version."""
    return {
        version: _hmac(pepper, number)
        for version, pepper in get_settings().identity_peppers().items()
    }


def matches(number: str) -> ColumnElement[bool]:
    """A condition on prescriptions: the row holds this number's hash under its own version."""
    return or_(
        false(),
        *(
            and_(Prescription.id_number_pepper_version == version, Prescription.id_number_hmac == h)
            for version, h in candidate_hashes(number).items()
        ),
    )


def find_prescriptions(session: Session, number: str, limit: int = 100) -> list[Prescription]:
    """Prescriptions made out to this identity number, newest first."""
    return list(
        session.scalars(
            select(Prescription)
            .where(matches(number))
            .order_by(Prescription.requested_at.desc())
            .limit(limit)
        )
    )


def upgrade_hashes(session: Session, number: str) -> int:
    """Re-hash rows holding this number under an earlier pepper with the current one; return how
    many moved."""
    version, current = hash_id_number(number)
    older = [
        and_(Prescription.id_number_pepper_version == v, Prescription.id_number_hmac == h)
        for v, h in candidate_hashes(number).items()
        if v != version
    ]
    if not older:
        return 0
    # SKIP LOCKED: a row another transaction holds (a doctor signing, a pharmacist reviewing)
    # is left on its old version, still matched, and never waited for.
    ids = select(Prescription.id).where(or_(*older)).with_for_update(skip_locked=True)
    result = session.execute(
        update(Prescription)
        .where(Prescription.id.in_(ids))
        .values(id_number_hmac=current, id_number_pepper_version=version)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


@dataclass(frozen=True)
class VersionCount:
    version: int
    rows: int
    last_requested_at: datetime
    configured: bool


def version_counts(session: Session) -> list[VersionCount]:
    """Stored hashes per pepper version, and whether that version's pepper is still configured."""
    configured = get_settings().identity_peppers()
    rows = session.execute(
        select(
            Prescription.id_number_pepper_version,
            func.count(),
            func.max(Prescription.requested_at),
        )
        .group_by(Prescription.id_number_pepper_version)
        .order_by(Prescription.id_number_pepper_version)
    ).all()
    return [VersionCount(v, n, last, v in configured) for v, n, last in rows]
