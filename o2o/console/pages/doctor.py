"""The doctor's pages: the queue, a request, signing and issuing, declining."""

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.console import queries
from o2o.console.auth import (
    DoctorUser,
    csrf_protect,
)
from o2o.console.pages.common import attachment_response, notice, order_lines, redirect
from o2o.console.rendering import console_url, render
from o2o.db import DbSession
from o2o.errors import DomainError, InvalidInput, validation_message
from o2o.i18n import N_, gettext
from o2o.orders.models import Order
from o2o.users.models import User
from prescriptions import issuing as rx_issuing
from prescriptions import queue as rx_queue
from prescriptions import requests as rx_requests
from prescriptions import signing
from prescriptions import trail as rx_trail
from prescriptions import views as rx_views
from prescriptions.schemas import SigningPayloadIn
from prescriptions.workflow import PrescriptionStatus

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


DOCTOR_QUEUE_LIMIT = 50


@router.get("/doctor", name="doctor_queue")
def doctor_queue(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Requests waiting for a doctor, and the ones this doctor has claimed, oldest first."""
    items, _ = rx_queue.queue(db, doctor, limit=DOCTOR_QUEUE_LIMIT, cursor=None)
    return render(
        request,
        "doctor_queue.html",
        {
            "title": gettext("Prescription requests"),
            "section": "doctor",
            "mine": [i for i in items if i.get("claimed_by_me")],
            "waiting": [i for i in items if not i.get("claimed_by_me")],
            "claim_minutes": get_settings().prescription_claim_minutes,
            "notice": notice(done),
        },
    )


@router.post("/doctor/prescriptions/{prescription_id}/claim", name="doctor_claim")
def doctor_claim(
    request: Request, db: DbSession, doctor: DoctorUser, prescription_id: str
) -> Response:
    """Take a waiting request (of doctors claiming at once, one wins)."""
    pid = queries.parse_uuid(prescription_id, "prescription")
    rx_issuing.claim(db, doctor, pid)
    url = console_url(request, "doctor_prescription", prescription_id=pid)
    return redirect(f"{url}?done=claimed")


def _doctor_context(db: DbSession, doctor: User, p, **extra) -> dict:
    order = db.get(Order, p.order_id)
    view = rx_views.to_view(db, doctor, p)
    lines = order_lines(db, order)
    return {
        "title": gettext("Request from {name}").format(name=view["patient"]["legal_name"]),
        "section": "doctor",
        "p": view,
        "lines": lines,
        "rx_lines": [line for line in lines if line["rx_only"]],
        "claimed": view["status"] is PrescriptionStatus.CLAIMED,
        "default_valid_hours": get_settings().prescription_default_valid_hours,
        "max_valid_hours": get_settings().prescription_max_valid_hours,
        "form": {},
        **extra,
    }


def _doctor_prescription(db: DbSession, doctor: User, prescription_id: str):
    pid = queries.parse_uuid(prescription_id, "prescription")
    return rx_trail.get_visible(db, doctor, pid)


@router.get("/doctor/prescriptions/{prescription_id}", name="doctor_prescription")
def doctor_prescription(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    prescription_id: str,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """A request this doctor claimed: the patient's account and the issue form."""
    p = _doctor_prescription(db, doctor, prescription_id)
    return render(
        request, "doctor_prescription.html", _doctor_context(db, doctor, p, notice=notice(done))
    )


@router.get("/doctor/prescriptions/{prescription_id}/attachment", name="doctor_attachment")
def doctor_attachment(db: DbSession, doctor: DoctorUser, prescription_id: str) -> Response:
    """The patient's photo or PDF, for the doctor who claimed the request."""
    p = _doctor_prescription(db, doctor, prescription_id)
    return attachment_response(rx_requests.attachment_for(db, doctor, p.id), p.id)


async def _issue_form(request: Request) -> dict:
    """Read the issue form: item_<n>_<field> rows, refills and validity."""
    form = await request.form()
    items: dict[int, dict] = {}
    for key, value in form.multi_items():
        parts = key.split("_", 2)
        if len(parts) == 3 and parts[0] == "item" and parts[1].isdigit() and isinstance(value, str):
            items.setdefault(int(parts[1]), {})[parts[2]] = value.strip()
    return {
        "items": [items[n] for n in sorted(items)][:20],
        "refills": str(form.get("refills", "0")).strip(),
        "valid_hours": str(form.get("valid_hours", "")).strip(),
    }


def _form_int(value):
    """Read a whole number typed in a form; anything else is left for validation to refuse."""
    # The API schemas take integers strictly (a JSON "2" is refused), and form fields are text.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _signing_payload_in(form: dict) -> SigningPayloadIn:
    items = [
        {
            "product_id": _form_int(row.get("product_id")),
            "quantity": _form_int(row.get("quantity")),
            "dose": row.get("dose"),
            "frequency": row.get("frequency"),
            "duration_days": _form_int(row.get("duration_days")),
        }
        # A line left without a quantity is not prescribed.
        for row in form["items"]
        if row.get("quantity") not in (None, "", "0")
    ]
    return SigningPayloadIn(
        items=items,
        refills=_form_int(form["refills"]) or 0,
        valid_hours=_form_int(form["valid_hours"]) or None,
    )


# The form's field names, as the doctor reads them.
_FIELDS = {
    "quantity": N_("quantity"),
    "dose": N_("dose"),
    "frequency": N_("how often"),
    "duration_days": N_("days"),
    "refills": N_("refills"),
    "valid_hours": N_("valid for (hours)"),
    "items": N_("medicines"),
}


def _field_word(name: str) -> str:
    word = _FIELDS.get(name)
    return gettext(word) if word is not None else name.replace("_", " ")


def _form_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        if loc[:1] == ["items"] and len(loc) >= 3:
            where = gettext("Medicine {number}, {field}").format(
                number=int(loc[1]) + 1, field=_field_word(loc[2])
            )
        elif loc:
            where = _field_word(loc[0]).capitalize()
        else:
            where = gettext("Form")
        message = validation_message(err)
        for prefix in ("Value error, ", gettext("Value error, {error}").format(error="")):
            message = message.removeprefix(prefix)
        problems.append(f"{where}: {message}")
    return problems


@router.post("/doctor/prescriptions/{prescription_id}/payload", name="doctor_payload")
def doctor_payload(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    prescription_id: str,
    form: Annotated[dict, Depends(_issue_form)],
) -> Response:
    """Prepare the canonical payload to sign from the issue form, and show the signing step."""
    p = _doctor_prescription(db, doctor, prescription_id)
    try:
        body = _signing_payload_in(form)
    except ValidationError as exc:
        return render(
            request,
            "doctor_prescription.html",
            _doctor_context(db, doctor, p, form=form, problems=_form_problems(exc)),
            status_code=422,
        )
    try:
        payload, key, sign_by = rx_issuing.prepare_signing_payload(db, doctor, p.id, body)
    except DomainError as exc:
        db.rollback()
        p = _doctor_prescription(db, doctor, prescription_id)
        return render(
            request,
            "doctor_prescription.html",
            _doctor_context(db, doctor, p, form=form, error=exc.message),
            status_code=exc.status_code,
        )
    return render(
        request,
        "doctor_sign.html",
        _doctor_context(
            db,
            doctor,
            p,
            payload_b64=signing.b64encode(payload),
            document=json.loads(payload),
            key_id=key.id,
            sign_by=sign_by,
        ),
    )


@router.post("/doctor/prescriptions/{prescription_id}/issue", name="doctor_issue")
def doctor_issue(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    prescription_id: str,
    payload: Annotated[str, Form(max_length=65536)] = "",
    signature: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Issue the prescription with the doctor's signature over the prepared payload."""
    p = _doctor_prescription(db, doctor, prescription_id)
    try:
        if not signature.strip():
            raise InvalidInput(gettext("Sign the prescription first, or paste the signature."))
        rx_issuing.issue(db, doctor, p.id, payload, signature)
    except DomainError as exc:
        db.rollback()
        p = _doctor_prescription(db, doctor, prescription_id)
        try:
            document = json.loads(base64.b64decode(payload, validate=True))
        except ValueError:
            document = None
        return render(
            request,
            "doctor_sign.html",
            _doctor_context(
                db,
                doctor,
                p,
                payload_b64=payload,
                document=document,
                signature_value=signature,
                issue_error=exc.message,
            ),
            status_code=exc.status_code,
        )
    return redirect(console_url(request, "doctor_queue") + "?done=issued")


@router.post("/doctor/prescriptions/{prescription_id}/decline", name="doctor_decline")
def doctor_decline(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    prescription_id: str,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Decline a claimed request with a reason (the order is cancelled)."""
    p = _doctor_prescription(db, doctor, prescription_id)
    if not reason.strip():
        return render(
            request,
            "doctor_prescription.html",
            _doctor_context(db, doctor, p, decline_error=gettext("Give a reason to decline.")),
            status_code=422,
        )
    rx_issuing.decline(db, doctor, p.id, reason.strip())
    return redirect(console_url(request, "doctor_queue") + "?done=declined")
