"""Doctors' signing keys: registered by the doctor, approved (one active key per doctor) or
revoked by an admin, and read under a share lock while a signature is accepted."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import Conflict, Forbidden, InvalidInput, NotFound
from o2o.users.models import User
from prescriptions import signing
from prescriptions.models import DoctorKey, DoctorKeyStatus


def register_key(session: Session, doctor: User, public_key_b64: str) -> DoctorKey:
    """Register a doctor's public key; it signs nothing until an admin approves it."""
    try:
        raw = signing.parse_public_key(public_key_b64)
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code="invalid_public_key") from None
    if session.scalar(select(DoctorKey.id).where(DoctorKey.public_key == raw)) is not None:
        raise Conflict("This key is already registered.", code="key_already_registered")
    key = DoctorKey(doctor_id=doctor.id, public_key=raw, status=DoctorKeyStatus.PENDING)
    session.add(key)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("This key is already registered.", code="key_already_registered") from None
    return key


def list_keys(
    session: Session,
    *,
    doctor_id: int | None = None,
    status: DoctorKeyStatus | None = None,
    limit: int = 20,
    after_id: int | None = None,
) -> list[DoctorKey]:
    """List keys by id, optionally one doctor's or in one status, after a key id."""
    query = select(DoctorKey).order_by(DoctorKey.id).limit(limit)
    if doctor_id is not None:
        query = query.where(DoctorKey.doctor_id == doctor_id)
    if status is not None:
        query = query.where(DoctorKey.status == status)
    if after_id is not None:
        query = query.where(DoctorKey.id > after_id)
    return list(session.scalars(query))


def _lock_doctor_keys(session: Session, key_id: int) -> tuple[DoctorKey, list[DoctorKey]]:
    """Lock every key of the key's doctor; return the key and all of them."""
    doctor_id = session.scalar(select(DoctorKey.doctor_id).where(DoctorKey.id == key_id))
    if doctor_id is None:
        raise NotFound("No such key.", code="key_not_found")
    # All of the doctor's keys, by id: approvals and revocations of one doctor serialise here.
    keys = list(
        session.scalars(
            select(DoctorKey)
            .where(DoctorKey.doctor_id == doctor_id)
            .order_by(DoctorKey.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    return next(k for k in keys if k.id == key_id), keys


def approve_key(session: Session, admin: User, key_id: int) -> DoctorKey:
    """Make a pending key the doctor's active key; the previous active key is superseded."""
    key, keys = _lock_doctor_keys(session, key_id)
    if key.status is not DoctorKeyStatus.PENDING:
        raise Conflict(
            f"Only a pending key can be approved; this one is {key.status.value}.",
            code="key_not_pending",
            details={"status": key.status.value},
        )
    doctor = session.get(User, key.doctor_id)
    if doctor is not None and doctor.created_by == admin.id:
        # Four eyes: the admin who created the doctor cannot also vouch for the doctor's key.
        raise Forbidden(
            "Another admin must approve this key: you created this doctor's account.",
            code="four_eyes_required",
        )
    at = clock.now()
    for other in keys:
        if other.status is DoctorKeyStatus.ACTIVE:
            other.status = DoctorKeyStatus.SUPERSEDED
            other.superseded_at = at
    # The old key leaves 'active' before the new one enters it (one-active unique index).
    session.flush()
    key.status = DoctorKeyStatus.ACTIVE
    key.approved_at = at
    key.approved_by = admin.id
    session.flush()
    return key


def revoke_key(session: Session, admin: User, key_id: int) -> DoctorKey:
    """Revoke a key: nothing it signed is accepted any more (repeating it changes nothing)."""
    key, _ = _lock_doctor_keys(session, key_id)
    if key.status is not DoctorKeyStatus.REVOKED:
        key.status = DoctorKeyStatus.REVOKED
        key.revoked_at = clock.now()
        key.revoked_by = admin.id
        session.flush()
    return key


def key_for_share(session: Session, key_id: int) -> DoctorKey:
    """Read a key under a share lock for a decision that relies on its status."""
    # FOR SHARE: a revocation (FOR UPDATE) waits until this decision commits, so no signature is
    # accepted after its key's revocation has committed.
    return session.scalar(
        select(DoctorKey)
        .where(DoctorKey.id == key_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )


def active_key(session: Session, doctor_id: int) -> DoctorKey | None:
    """Return the doctor's active key, if any."""
    return session.scalar(
        select(DoctorKey).where(
            DoctorKey.doctor_id == doctor_id, DoctorKey.status == DoctorKeyStatus.ACTIVE
        )
    )
