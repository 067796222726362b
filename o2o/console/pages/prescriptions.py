"""The pharmacist's prescription pages: the queue, the detail with the attachment, review."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select

from o2o import clock
from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.console import queries
from o2o.console.auth import (
    StaffUser,
    csrf_protect,
)
from o2o.console.pages.common import (
    StorePage,
    attachment_response,
    notice,
    order_lines,
    redirect,
    store_context,
)
from o2o.console.rendering import console_url, render
from o2o.db import DbSession
from o2o.errors import DomainError, NotFound
from o2o.i18n import gettext
from o2o.orders.models import Order
from o2o.users.models import User
from prescriptions import audit as rx_audit
from prescriptions import issuing as rx_issuing
from prescriptions import queue as rx_queue
from prescriptions import requests as rx_requests
from prescriptions import review as rx_review
from prescriptions import trail as rx_trail
from prescriptions import views as rx_views
from prescriptions import workflow
from prescriptions.models import DoctorKeyStatus
from prescriptions.schemas import ReviewIn
from prescriptions.workflow import PrescriptionStatus
from stores.models import Store

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


# Issued prescriptions that expire within this are reviewed first.
EXPIRY_URGENT = timedelta(hours=2)
QUEUE_LIMIT = 100


def _store_prescription(db: DbSession, user: User, store: Store, prescription_id: str):
    """A prescription the user may see whose order belongs to this store; 404 otherwise."""
    pid = queries.parse_uuid(prescription_id, "prescription")
    p = rx_trail.get_visible(db, user, pid)
    order = db.get(Order, p.order_id)
    if order is None or order.store_id != store.id:
        raise NotFound(gettext("No such prescription."), code="prescription_not_found")
    return p, order


@router.get("/stores/{store_id}/prescriptions", name="prescription_queue")
def prescription_queue(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Issued prescriptions waiting for this store's review: most urgent, then oldest, first."""
    items, _ = rx_queue.queue(db, user, limit=QUEUE_LIMIT, cursor=None)
    now = clock.now()
    rows = []
    for item in items:
        if item.get("store_id") != store.id:
            continue
        p = rx_trail.get_visible(db, user, item["id"])
        view = rx_views.to_view(db, user, p)
        expiring = item["expires_at"] is not None and item["expires_at"] - now <= EXPIRY_URGENT
        rows.append({**item, "view": view, "expiring": expiring})
    rows.sort(key=lambda r: (not (r["overdue"] or r["expiring"]), -r["waited_minutes"]))
    return render(
        request,
        "prescription_queue.html",
        {
            **store_context(db, user, store, "prescriptions"),
            "title": gettext("Prescriptions · {store}").format(store=store.name),
            "rows": rows,
            "now": now,
            "review_minutes": get_settings().prescription_review_minutes,
            "notice": notice(done),
        },
    )


def _signature_state(db: DbSession, p) -> str:
    """ "valid", "invalid", "key_revoked" or "unsigned", checked now against the doctor's key."""
    if p.signature is None:
        return "unsigned"
    verifies, key = rx_review.verify_stored_signature(db, p)
    if key is not None and key.status is DoctorKeyStatus.REVOKED:
        return "key_revoked"
    return "valid" if verifies else "invalid"


def _prescription_context(
    db: DbSession, user: User, store: Store, p, order: Order, **extra
) -> dict:
    view = rx_views.to_view(db, user, p)
    document = rx_issuing.signed_document(p) if p.signed_payload else None
    prescribed = (document or {}).get("items") or view["items"] or []
    lines = order_lines(db, order)
    problems = {
        problem["product_id"]: problem
        for problem in workflow.items_outside_prescription(
            [workflow.OrderedItem(li["product_id"], li["quantity"], li["rx_only"]) for li in lines],
            [
                workflow.PrescribedItem(i["product_id"], i["quantity"], i["duration_days"])
                for i in prescribed
            ],
        )
    }
    by_product = {i["product_id"]: i for i in prescribed}
    comparison = [
        {
            **li,
            "prescribed": by_product.get(li["product_id"]),
            "problem": problems.get(li["product_id"]),
        }
        for li in lines
    ]
    audit = rx_audit.audit_entries(db, user, p.id, limit=100, after_id=None)
    actors = {
        u.id: u.name
        for u in db.scalars(
            select(User).where(User.id.in_({a.actor_id for a in audit if a.actor_id}))
        )
    }
    now = clock.now()
    return {
        **store_context(db, user, store, "prescriptions"),
        "title": gettext("Prescription for {name}").format(name=view["patient"]["legal_name"]),
        "p": view,
        "order": order,
        "signature_state": _signature_state(db, p),
        "document": document,
        "prescribed": prescribed,
        "comparison": comparison,
        "has_problems": bool(problems),
        "audit": audit,
        "actors": actors,
        "now": now,
        "expired": view["expires_at"] is not None and view["expires_at"] <= now,
        "minutes_left": (
            (view["expires_at"] - now).total_seconds() / 60 if view["expires_at"] else None
        ),
        "reviewable": view["status"] is PrescriptionStatus.ISSUED,
        **extra,
    }


@router.get("/stores/{store_id}/prescriptions/{prescription_id}", name="prescription_detail")
def prescription_detail(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, prescription_id: str
) -> Response:
    """One prescription: the request, the doctor's signed prescription, and the order."""
    p, order = _store_prescription(db, user, store, prescription_id)
    return render(
        request, "prescription_detail.html", _prescription_context(db, user, store, p, order)
    )


@router.get(
    "/stores/{store_id}/prescriptions/{prescription_id}/attachment",
    name="prescription_attachment",
)
def prescription_attachment(
    db: DbSession, user: StaffUser, store: StorePage, prescription_id: str
) -> Response:
    """The patient's photo or PDF, only for staff of the order's store."""
    p, _ = _store_prescription(db, user, store, prescription_id)
    return attachment_response(rx_requests.attachment_for(db, user, p.id), p.id)


@router.post(
    "/stores/{store_id}/prescriptions/{prescription_id}/review", name="prescription_review"
)
def prescription_review(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    prescription_id: str,
    decision: Annotated[str, Form(max_length=10)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Approve (the order is released) or reject with a reason (the order is cancelled)."""
    p, order = _store_prescription(db, user, store, prescription_id)
    reason = reason.strip()
    try:
        body = ReviewIn(decision=decision, reason=reason or None)
    except ValidationError:
        message = (
            gettext("Give a reason to reject the prescription.")
            if decision == "reject"
            else gettext("Choose approve or reject.")
        )
        return render(
            request,
            "prescription_detail.html",
            _prescription_context(
                db, user, store, p, order, reason_error=message, reason_value=reason
            ),
            status_code=422,
        )
    try:
        rx_review.review(db, user, p.id, body)
    except DomainError as exc:
        db.rollback()
        p, order = _store_prescription(db, user, store, prescription_id)
        return render(
            request,
            "prescription_detail.html",
            _prescription_context(
                db, user, store, p, order, error=exc.message, reason_value=reason
            ),
            status_code=exc.status_code,
        )
    url = console_url(request, "prescription_queue", store_id=store.id)
    return redirect(f"{url}?done={'approved' if body.decision == 'approve' else 'rejected'}")
