"""Doctors' signing keys: registered by the doctor, who proves holding the private key by signing
a server challenge; approved (one active key per doctor, by an admin other than the doctor's
creator) or revoked by an admin, and read under a share lock while a signature is accepted."""

import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, Forbidden, InvalidInput, NotFound
from o2o.i18n import gettext
from o2o.users.models import User
from prescriptions import signing
from prescriptions.models import DoctorKey, DoctorKeyStatus

PROOF_PURPOSE = "o2o:doctor-key-proof"
NONCE_BYTES = 32


def register_key(session: Session, doctor: User, public_key_b64: str) -> DoctorKey:
    """Register a doctor's public key with a challenge to sign; it signs nothing until proved and
    approved."""
    try:
        raw = signing.parse_public_key(public_key_b64)
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code="invalid_public_key") from None
    if session.scalar(select(DoctorKey.id).where(DoctorKey.public_key == raw)) is not None:
        raise Conflict(gettext("This key is already registered."), code="key_already_registered")
    key = DoctorKey(doctor_id=doctor.id, public_key=raw, status=DoctorKeyStatus.PENDING)
    session.add(key)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(
            gettext("This key is already registered."), code="key_already_registered"
        ) from None
    _new_challenge(key)
    session.flush()
    return key


def _new_challenge(key: DoctorKey) -> None:
    """Give the key a fresh challenge (any earlier one stops being accepted)."""
    expires_at = clock.now() + timedelta(minutes=get_settings().doctor_key_challenge_minutes)
    # The signed bytes name their purpose, the key and its doctor: a signature over them proves
    # nothing else, and a prescription payload (no "purpose") is never one of them.
    key.proof_challenge = signing.canonical_bytes(
        {
            "purpose": PROOF_PURPOSE,
            "key_id": key.id,
            "doctor_id": key.doctor_id,
            "public_key": signing.b64encode(key.public_key),
            "nonce": signing.b64encode(secrets.token_bytes(NONCE_BYTES)),
            "expires_at": expires_at.isoformat(),
        }
    )
    key.proof_challenge_expires_at = expires_at


def _lock_own_unproved_key(session: Session, doctor: User, key_id: int) -> DoctorKey:
    """Lock one of the doctor's keys that still awaits its proof."""
    key = session.scalar(
        select(DoctorKey)
        .where(DoctorKey.id == key_id, DoctorKey.doctor_id == doctor.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if key is None:
        # Another doctor's key is answered as if it did not exist.
        raise NotFound(gettext("No such key."), code="key_not_found")
    if key.proved_at is not None:
        raise Conflict(gettext("This key is already proved."), code="key_already_proved")
    if key.status is not DoctorKeyStatus.PENDING:
        raise Conflict(
            gettext("Only a pending key can be proved; this one is {value}.").format(
                value=key.status.value
            ),
            code="key_not_pending",
            details={"status": key.status.value},
        )
    return key


def renew_challenge(session: Session, doctor: User, key_id: int) -> DoctorKey:
    """Replace the challenge of the doctor's unproved key, for example after it expired."""
    key = _lock_own_unproved_key(session, doctor, key_id)
    _new_challenge(key)
    session.flush()
    return key


def prove_key(session: Session, doctor: User, key_id: int, signature_b64: str) -> DoctorKey:
    """Accept the doctor's signature of the key's challenge as proof of holding the private key."""
    key = _lock_own_unproved_key(session, doctor, key_id)
    at = clock.now()
    if key.proof_challenge is None or key.proof_challenge_expires_at is None:
        raise Conflict(gettext("This key has no challenge; ask for one."), code="challenge_expired")
    if at >= key.proof_challenge_expires_at:
        raise Conflict(
            gettext("The challenge has expired; ask for a new one."),
            code="challenge_expired",
            details={"expired_at": key.proof_challenge_expires_at.isoformat()},
        )
    try:
        signature = signing.b64decode(signature_b64, what="signature")
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code="invalid_signature") from None
    if not signing.verify(key.public_key, key.proof_challenge, signature):
        raise InvalidInput(
            gettext("The signature is not this key's signature of its challenge."),
            code="invalid_signature",
        )
    # Used once: the challenge goes with the proof.
    key.proved_at = at
    key.proof_challenge = None
    key.proof_challenge_expires_at = None
    session.flush()
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
        raise NotFound(gettext("No such key."), code="key_not_found")
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
            gettext("Only a pending key can be approved; this one is {value}.").format(
                value=key.status.value
            ),
            code="key_not_pending",
            details={"status": key.status.value},
        )
    if key.proved_at is None:
        raise Conflict(
            gettext(
                "The doctor has not yet proved holding this key's private key (the signed challenge)."
            ),
            code="key_not_proved",
        )
    doctor = session.get(User, key.doctor_id)
    if doctor is not None and doctor.created_by == admin.id:
        # Four eyes: the admin who created the doctor cannot also vouch for the doctor's key.
        raise Forbidden(
            gettext("Another admin must approve this key: you created this doctor's account."),
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
