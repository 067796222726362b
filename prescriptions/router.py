"""Prescription endpoints: the patient's request, doctors' keys and decisions, the pharmacist's
review, the queue, the audit trail and the FHIR export."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from o2o import pagination
from o2o.api import ApiRoute, CursorQuery, RowId
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.users.dependencies import AdminUser, CurrentUser, PatientUser
from prescriptions import (
    audit,
    doctor_keys,
    issuing,
    queue,
    refills,
    requests,
    signing,
    trail,
    views,
)
from prescriptions import review as pharmacist_review
from prescriptions.dependencies import (
    DoctorUser,
    PharmacistUser,
    QueueUser,
    RequestBody,
    request_body_openapi,
)
from prescriptions.models import DoctorKey, DoctorKeyStatus
from prescriptions.schemas import (
    AuditPage,
    DeclineIn,
    DoctorKeyIn,
    DoctorKeyOut,
    DoctorKeyPage,
    DoctorKeyRegisteredOut,
    IssueIn,
    KeyChallengeOut,
    KeyProofIn,
    PrescriptionOut,
    QueuePage,
    RefillIn,
    ReviewBody,
    ReviewOut,
    SigningPayloadIn,
    SigningPayloadOut,
)
from prescriptions.workflow import EXTENSIONS

router = APIRouter(route_class=ApiRoute, tags=["prescriptions"])

Limit = Annotated[int, Query(ge=1, le=100)]


def _key_out(key: DoctorKey) -> DoctorKeyOut:
    return DoctorKeyOut(
        id=key.id,
        doctor_id=key.doctor_id,
        status=key.status,
        public_key=signing.b64encode(key.public_key),
        created_at=key.created_at,
        approved_at=key.approved_at,
        superseded_at=key.superseded_at,
        revoked_at=key.revoked_at,
        proved_at=key.proved_at,
    )


def _challenge_out(key: DoctorKey) -> KeyChallengeOut:
    return KeyChallengeOut(
        key_id=key.id,
        payload=signing.b64encode(key.proof_challenge),
        expires_at=key.proof_challenge_expires_at,
    )


# Keys and audit entries are paged by id: the cursor holds the last id sent.
KEYS_LISTING = "doctor-keys"
AUDIT_LISTING = "prescription-audit"


def _next_cursor(listing: str, rows: list, limit: int) -> str | None:
    """The cursor after the last row of a full page (None when the page is the last)."""
    return pagination.encode_cursor(listing, [rows[-1].id]) if len(rows) == limit else None


def _after_id(listing: str, cursor: str | None) -> int | None:
    """The id a cursor of this listing holds (None for the first page)."""
    if cursor is None:
        return None
    (after_id,) = pagination.decode_cursor(cursor, listing, [pagination.integer])
    return after_id


def _key_page(keys: list[DoctorKey], limit: int) -> dict:
    """A page of keys."""
    return {
        "items": [_key_out(k) for k in keys],
        "next_cursor": _next_cursor(KEYS_LISTING, keys, limit),
    }


# --- patient -----------------------------------------------------------------------------------


@router.post(
    "/prescriptions",
    status_code=status.HTTP_201_CREATED,
    response_model=PrescriptionOut,
    openapi_extra=request_body_openapi(),
    responses=error_responses(
        e422=(
            "invalid_attachment",
            "empty_attachment",
            "unsupported_attachment_type",
            "attachment_type_mismatch",
            "attachment_quota_exceeded",
        ),
        e404="order_not_found",
        e429="rate_limited: too many prescription requests from this patient",
        e409="the order does not need, or already has, a prescription request",
        e413="attachment_too_large; payload_too_large",
        e415="unsupported_media_type: JSON or multipart only; attachment not PNG, JPEG or PDF",
    ),
)
def request_prescription(patient: PatientUser, request_body: RequestBody, session: DbSession):
    """Ask for a prescription for your order (JSON, or multipart with an `attachment`)."""
    body, attachment = request_body
    p = requests.request_prescription(session, patient, body, attachment)
    return views.to_view(session, patient, p)


@router.post(
    "/prescriptions/{prescription_id}/refill",
    status_code=status.HTTP_201_CREATED,
    response_model=PrescriptionOut,
    responses=error_responses(
        e404="prescription_not_found; order_not_found",
        e409="prescription_not_filled; refill_too_early; prescription_expired; no_refills_left; "
        "order_not_awaiting_prescription; prescription_not_needed; prescription_already_requested",
    ),
)
def request_refill(
    prescription_id: uuid.UUID, body: RefillIn, patient: PatientUser, session: DbSession
):
    """Fill another order of yours from a prescription already filled, when the doctor allowed
    refills and it is still valid; the store's pharmacist reviews it as any prescription."""
    p = refills.request_refill(session, patient, prescription_id, body.order_id)
    return views.to_view(session, patient, p)


# --- queue (before /prescriptions/{id} so "queue" is never taken for an id) --------------------


@router.get(
    "/prescriptions/queue",
    response_model=QueuePage,
    responses=error_responses(e422=("invalid_cursor",)),
)
def prescription_queue(
    user: QueueUser, session: DbSession, limit: Limit = 20, cursor: CursorQuery = None
):
    """What awaits you, oldest first: doctors' requests, or pharmacists' issued prescriptions."""
    items, next_cursor = queue.queue(session, user, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}


# --- reading -----------------------------------------------------------------------------------


@router.get("/prescriptions/{prescription_id}", response_model=PrescriptionOut)
def get_prescription(prescription_id: uuid.UUID, user: CurrentUser, session: DbSession):
    """Read a prescription (owner, its doctor, a pharmacist of the store, admin)."""
    p = trail.get_visible(session, user, prescription_id)
    return views.to_view(session, user, p)


@router.get(
    "/prescriptions/{prescription_id}/attachment",
    response_class=Response,
    responses={200: {"content": {ct: {} for ct in EXTENSIONS}}},
)
def get_attachment(prescription_id: uuid.UUID, user: CurrentUser, session: DbSession):
    """Download the request's attachment (as a file, never rendered inline)."""
    att = requests.attachment_for(session, user, prescription_id)
    filename = f"prescription-{prescription_id}.{EXTENSIONS[att.content_type]}"
    return Response(
        content=att.data,
        media_type=att.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@router.get("/prescriptions/{prescription_id}/audit", response_model=AuditPage)
def get_audit(
    prescription_id: uuid.UUID,
    user: CurrentUser,
    session: DbSession,
    limit: Limit = 100,
    cursor: CursorQuery = None,
):
    """Every step of the prescription, oldest first."""
    entries = audit.audit_entries(
        session, user, prescription_id, limit=limit, after_id=_after_id(AUDIT_LISTING, cursor)
    )
    next_cursor = _next_cursor(AUDIT_LISTING, entries, limit)
    return {"items": entries, "next_cursor": next_cursor}


@router.get(
    "/prescriptions/{prescription_id}/fhir",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/fhir+json": {}}},
        **error_responses(e409="not_issued: only a signed prescription can be exported"),
    },
)
def get_fhir(prescription_id: uuid.UUID, user: CurrentUser, session: DbSession):
    """The prescription as a FHIR R4 Bundle: MedicationRequest(s) and a signed Provenance."""
    bundle = audit.fhir_export(session, user, prescription_id)
    return JSONResponse(bundle, media_type="application/fhir+json")


# --- doctor ------------------------------------------------------------------------------------


@router.post(
    "/doctors/me/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=DoctorKeyRegisteredOut,
    responses=error_responses(e422=("invalid_public_key",)),
)
def register_key(body: DoctorKeyIn, doctor: DoctorUser, session: DbSession):
    """Register your Ed25519 public key; sign the challenge in the answer to prove you hold the
    private key, then an admin can approve it."""
    key = doctor_keys.register_key(session, doctor, body.public_key)
    return DoctorKeyRegisteredOut(**_key_out(key).model_dump(), challenge=_challenge_out(key))


@router.post(
    "/doctors/me/keys/{key_id}/proof",
    response_model=DoctorKeyOut,
    responses=error_responses(
        e422=("invalid_signature",),
        e409="challenge_expired; key_already_proved; key_not_pending",
        e404="key_not_found",
    ),
)
def prove_key(key_id: RowId, body: KeyProofIn, doctor: DoctorUser, session: DbSession):
    """Prove you hold the key's private key: send your signature of its challenge payload."""
    return _key_out(doctor_keys.prove_key(session, doctor, key_id, body.signature))


@router.post(
    "/doctors/me/keys/{key_id}/challenge",
    response_model=KeyChallengeOut,
    responses=error_responses(e409="key_already_proved; key_not_pending", e404="key_not_found"),
)
def renew_key_challenge(key_id: RowId, doctor: DoctorUser, session: DbSession):
    """A new challenge for your unproved key (the earlier one stops being accepted)."""
    return _challenge_out(doctor_keys.renew_challenge(session, doctor, key_id))


@router.get(
    "/doctors/me/keys",
    response_model=DoctorKeyPage,
    responses=error_responses(e422=("invalid_cursor",)),
)
def my_keys(doctor: DoctorUser, session: DbSession, limit: Limit = 20, cursor: CursorQuery = None):
    """Your keys and their status."""
    keys = doctor_keys.list_keys(
        session, doctor_id=doctor.id, limit=limit, after_id=_after_id(KEYS_LISTING, cursor)
    )
    return _key_page(keys, limit)


@router.post(
    "/prescriptions/{prescription_id}/claim",
    response_model=PrescriptionOut,
    responses=error_responses(
        e409="claimed_by_another_doctor; too_many_open_claims; not claimable in this state"
    ),
)
def claim(prescription_id: uuid.UUID, doctor: DoctorUser, session: DbSession):
    """Take a waiting request (one doctor wins; the others get 409)."""
    p = issuing.claim(session, doctor, prescription_id)
    return views.to_view(session, doctor, p)


@router.post(
    "/prescriptions/{prescription_id}/signing-payload",
    response_model=SigningPayloadOut,
    responses=error_responses(
        e422=("unknown_product", "controlled_product", "validity_too_long", "repeated_product"),
        e409="claimed_by_another_doctor; illegal_transition; no approved key",
    ),
)
def signing_payload(
    prescription_id: uuid.UUID, body: SigningPayloadIn, doctor: DoctorUser, session: DbSession
):
    """Prepare the canonical payload of your decision for your key to sign."""
    payload, key, sign_by = issuing.prepare_signing_payload(session, doctor, prescription_id, body)
    return {"payload": signing.b64encode(payload), "key_id": key.id, "sign_by": sign_by}


@router.post(
    "/prescriptions/{prescription_id}/issue",
    response_model=PrescriptionOut,
    responses=error_responses(
        e422=("payload_mismatch", "key_not_active", "key_revoked", "invalid_signature"),
        e409="claimed_by_another_doctor; no_pending_payload; illegal_transition",
    ),
)
def issue(prescription_id: uuid.UUID, body: IssueIn, doctor: DoctorUser, session: DbSession):
    """Issue the prescription with your signature over the prepared payload."""
    p = issuing.issue(session, doctor, prescription_id, body.payload, body.signature)
    return views.to_view(session, doctor, p)


@router.post(
    "/prescriptions/{prescription_id}/decline",
    response_model=PrescriptionOut,
    responses=error_responses(e409="claimed_by_another_doctor; illegal_transition"),
)
def decline(prescription_id: uuid.UUID, body: DeclineIn, doctor: DoctorUser, session: DbSession):
    """Decline the request with a reason; the order is cancelled and its stock returned."""
    p = issuing.decline(session, doctor, prescription_id, body.reason)
    return views.to_view(session, doctor, p)


# --- pharmacist --------------------------------------------------------------------------------


@router.post(
    "/prescriptions/{prescription_id}/review",
    response_model=ReviewOut,
    responses=error_responses(
        e422=("exceeds_prescription",),
        e409="not_issued; illegal_transition; prescription expired or used; substitution_not_allowed "
        "(an equivalent on the order the prescription does not allow)",
    ),
)
def review(
    prescription_id: uuid.UUID, body: ReviewBody, pharmacist: PharmacistUser, session: DbSession
):
    """Approve (the order is released) or reject with a reason (the order is cancelled)."""
    p, order, moved = pharmacist_review.review(session, pharmacist, prescription_id, body)
    return {
        **views.to_view(session, pharmacist, p),
        "order_status": order.status.value,
        "reallocated": moved,
    }


# --- admin -------------------------------------------------------------------------------------


@router.get(
    "/admin/doctor-keys",
    response_model=DoctorKeyPage,
    responses=error_responses(e422=("invalid_cursor",)),
)
def list_doctor_keys(
    admin: AdminUser,
    session: DbSession,
    key_status: Annotated[DoctorKeyStatus | None, Query(alias="status")] = None,
    limit: Limit = 20,
    cursor: CursorQuery = None,
):
    """Doctors' keys, for example the pending ones to approve."""
    keys = doctor_keys.list_keys(
        session, status=key_status, limit=limit, after_id=_after_id(KEYS_LISTING, cursor)
    )
    return _key_page(keys, limit)


@router.post(
    "/admin/doctor-keys/{key_id}/approve",
    response_model=DoctorKeyOut,
    responses=error_responses(
        e409="key_not_pending; key_not_proved: the doctor has not signed the key's challenge",
        e403="four_eyes_required: you created this doctor's account",
    ),
)
def approve_key(key_id: RowId, admin: AdminUser, session: DbSession):
    """Make a pending key the doctor's active key (the previous one is superseded)."""
    return _key_out(doctor_keys.approve_key(session, admin, key_id))


@router.post(
    "/admin/doctor-keys/{key_id}/revoke",
    response_model=DoctorKeyOut,
    responses=error_responses(e409="the key is already revoked"),
)
def revoke_key(key_id: RowId, admin: AdminUser, session: DbSession):
    """Revoke a key: what it signs from now on is refused, and unreviewed prescriptions it
    signed can no longer be approved."""
    return _key_out(doctor_keys.revoke_key(session, admin, key_id))
