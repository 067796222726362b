"""Console pages: sign-in, store pages for pharmacists, and doctor pages.

Pages only read and render; every change goes through the owning domain's service function, in
the request's one transaction, exactly as the JSON API does.
"""

import base64
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from dispatch import reports as sla_reports
from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.console import queries, svg
from o2o.console.auth import (
    ConsoleSessionDep,
    DoctorUser,
    StaffUser,
    check_store,
    csrf_protect,
    safe_next,
    sign_in,
)
from o2o.console.rendering import console_url, render
from o2o.db import DbSession
from o2o.errors import DomainError, InvalidInput, NotFound, RateLimited
from o2o.geo import area_geojson, to_latlon
from o2o.order_flow import access, store_actions
from o2o.orders.models import Order
from o2o.users.models import Role, User
from prescriptions import service as prescriptions_service
from prescriptions import signing, workflow
from prescriptions.models import DoctorKeyStatus
from prescriptions.schemas import ReviewIn, SigningPayloadIn
from prescriptions.workflow import PrescriptionStatus
from stores import service as stores_service
from stores.models import Store

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)

# Messages shown after a redirect, chosen by key so a link cannot put arbitrary text on a page.
NOTICES = {
    "signed_out": "You are signed out.",
    "approved": "Prescription approved; the order is released to the store.",
    "rejected": "Prescription rejected; the order is cancelled and its stock returned.",
    "preparing": "Order moved to preparing.",
    "ready": "Order marked ready.",
    "handed_over": "Pickup handed over; the order is completed.",
    "claimed": "Request claimed; it is yours to issue or decline.",
    "issued": "Prescription issued and signed.",
    "declined": "Request declined.",
}


def _notice(key: str | None) -> str | None:
    return NOTICES.get(key or "")


def redirect(url: str) -> RedirectResponse:
    """Answer a form post with 303 See Other (the browser follows with a GET)."""
    return RedirectResponse(url, status_code=303)


def staff_stores(db: DbSession, user: User) -> list[Store]:
    """Stores a pharmacist works at, by name (admins get none here: they pick from the list)."""
    if user.role is not Role.PHARMACIST or not user.store_ids:
        return []
    return list(db.scalars(select(Store).where(Store.id.in_(user.store_ids)).order_by(Store.name)))


def store_page(request: Request, store_id: int, user: StaffUser, db: DbSession) -> Store:
    """Load a store the signed-in staff member works at, or 404 (never revealing it exists)."""
    check_store(user, store_id)
    store = db.get(Store, store_id)
    if store is None:
        raise NotFound("No such store.", code="store_not_found")
    request.state.console_store = store
    return store


StorePage = Annotated[Store, Depends(store_page)]


def store_context(db: DbSession, user: User, store: Store, section: str) -> dict:
    return {"store": store, "stores": staff_stores(db, user), "section": section}


# --- sign-in -------------------------------------------------------------------------------


@router.get("/", name="home")
def home(request: Request, db: DbSession, session: ConsoleSessionDep) -> Response:
    """Send each user to where their work is."""
    if session.uid is None:
        return redirect(console_url(request, "login_form"))
    user = db.get(User, session.uid)
    if user is None or not user.is_active:
        return redirect(console_url(request, "login_form"))
    if user.role is Role.DOCTOR:
        return redirect(console_url(request, "doctor_queue"))
    if user.role is Role.PHARMACIST and len(user.store_ids) == 1:
        return redirect(console_url(request, "orders_board", store_id=user.store_ids[0]))
    return redirect(console_url(request, "store_list"))


@router.get("/login", name="login_form")
def login_form(
    request: Request,
    next: Annotated[str | None, Query(max_length=500)] = None,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Show the sign-in form."""
    return render(
        request,
        "login.html",
        {"next_url": safe_next(next), "notice": _notice(done), "title": "Sign in"},
    )


@router.post("/login", name="login")
def login(
    request: Request,
    db: DbSession,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=128)],
    next: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    """Sign in with the API's email and password (same rate limits); staff and doctors only."""
    try:
        sign_in(db, request, email, password)
    except DomainError as exc:
        headers = exc.headers if isinstance(exc, RateLimited) else None
        return render(
            request,
            "login.html",
            {"login_error": exc.message, "email": email, "next_url": safe_next(next)},
            status_code=exc.status_code,
            headers=headers,
        )
    return redirect(safe_next(next))


@router.post("/logout", name="logout")
def logout(request: Request, session: ConsoleSessionDep) -> Response:
    """Sign out and forget this session."""
    session.end()
    return redirect(console_url(request, "login_form") + "?done=signed_out")


# --- stores --------------------------------------------------------------------------------


@router.get("/stores", name="store_list")
def store_list(
    request: Request,
    db: DbSession,
    user: StaffUser,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """List the stores this user works at (an admin searches all stores)."""
    if user.role is Role.ADMIN:
        stmt = select(Store).order_by(Store.name).limit(100)
        if q:
            stmt = stmt.where(Store.name.ilike(stores_service.like_pattern(q), escape="\\"))
        stores = list(db.scalars(stmt))
    else:
        stores = staff_stores(db, user)
    return render(request, "stores.html", {"stores": stores, "q": q, "title": "Your stores"})


SECTIONS = {
    "prescriptions": "prescription_queue",
    "orders": "orders_board",
    "inventory": "inventory",
    "sla": "sla_page",
}


@router.get("/switch-store", name="switch_store")
def switch_store(
    request: Request,
    user: StaffUser,
    store_id: Annotated[int, Query()],
    section: Annotated[str, Query(max_length=20)] = "orders",
) -> Response:
    """Jump to the same section of another of the user's stores."""
    check_store(user, store_id)
    route = SECTIONS.get(section, "orders_board")
    return redirect(console_url(request, route, store_id=store_id))


# --- inventory -----------------------------------------------------------------------------

LOW_STOCK_DEFAULT = 10


@router.get("/stores/{store_id}/inventory", name="inventory")
def inventory(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    q: Annotated[str | None, Query(max_length=100)] = None,
    low: Annotated[int, Query(ge=0, le=100_000)] = LOW_STOCK_DEFAULT,
    days: Annotated[int | None, Query(ge=1, le=3650)] = None,
) -> Response:
    """Low stock, lots expiring soon, and a product search with this store's numbers."""
    # By default look a month past the point where lots stop being sold online.
    within_days = days or store.min_shelf_life_days + 30
    q = (q or "").strip()
    return render(
        request,
        "inventory.html",
        {
            **store_context(db, user, store, "inventory"),
            "title": f"Inventory · {store.name}",
            "q": q,
            "results": queries.search_stock(db, store, q) if q else None,
            "low": low,
            "low_stock": queries.low_stock(db, store, low),
            "within_days": within_days,
            "expiring": queries.expiring_lots(db, store, within_days),
            "today": queries.store_today(store),
        },
    )


# --- orders board --------------------------------------------------------------------------

BOARD_REFRESH_SECONDS = 30


def countdown(deadline: datetime | None, now: datetime | None = None) -> str:
    """The countdown text the page starts with (JavaScript then updates it every second)."""
    if deadline is None:
        return ""
    seconds = int((deadline - (now or datetime.now(UTC))).total_seconds())
    late = seconds < 0
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text} overdue" if late else f"{text} left"


def _board_context(db: DbSession, user: User, store: Store, **extra) -> dict:
    board = queries.orders_board(db, store)
    return {
        **store_context(db, user, store, "orders"),
        "title": f"Orders · {store.name}",
        "board": board,
        "open_count": sum(len(orders) for _, _, orders in board.columns),
        "now": datetime.now(UTC),
        "countdown": countdown,
        "refresh_seconds": BOARD_REFRESH_SECONDS,
        "sla_minutes": get_settings().sla_minutes,
        **extra,
    }


@router.get("/stores/{store_id}/orders", name="orders_board")
def orders_board(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The store's orders by state, with SLA countdowns and the store-side actions."""
    return render(request, "orders.html", _board_context(db, user, store, notice=_notice(done)))


@router.get("/stores/{store_id}/orders/board", name="orders_board_fragment")
def orders_board_fragment(
    request: Request, db: DbSession, user: StaffUser, store: StorePage
) -> Response:
    """Just the board, for the periodic htmx refresh."""
    return render(request, "_board.html", _board_context(db, user, store))


def _staff_order(db: DbSession, user: User, store: Store, order_id: str) -> Order:
    """Lock one of this store's orders for a store action (the orders service checks staff)."""
    order = access.get_order_for_staff(db, user, queries.parse_uuid(order_id))
    if order.store_id != store.id:
        raise NotFound("No such order at this store.", code="order_not_found")
    return order


def _board_refusal(
    request: Request, db: DbSession, user: User, store: Store, exc: DomainError, **extra
) -> Response:
    # A refused hand-over is shown at its code field only (one alert, where the user looks).
    banner = None if "handover_errors" in extra else exc.message
    return render(
        request,
        "orders.html",
        _board_context(db, user, store, error=banner, **extra),
        status_code=exc.status_code,
    )


def _after_action(request: Request, store: Store, done: str, order_id: str) -> Response:
    url = console_url(request, "orders_board", store_id=store.id)
    return redirect(f"{url}?done={done}#order-{order_id}")


@router.post("/stores/{store_id}/orders/{order_id}/prepare", name="order_prepare")
def order_prepare(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, order_id: str
) -> Response:
    """Start preparing a released order."""
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.prepare(db, order, actor_id=user.id)
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "preparing", order_id)


@router.post("/stores/{store_id}/orders/{order_id}/ready", name="order_ready")
def order_ready(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, order_id: str
) -> Response:
    """Mark a prepared order ready (a delivery goes to the couriers)."""
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.mark_ready(db, order, actor_id=user.id)
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "ready", order_id)


@router.post("/stores/{store_id}/orders/{order_id}/handover", name="order_handover")
def order_handover(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    order_id: str,
    pickup_code: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Hand a ready pickup over to the patient who shows the pickup code."""
    if not pickup_code.strip():
        # An empty submission is not a guess: it does not use up one of the patient's tries.
        return render(
            request,
            "orders.html",
            _board_context(
                db, user, store, handover_errors={order_id: "Enter the patient's pickup code."}
            ),
            status_code=422,
        )
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.handover(db, order, pickup_code.strip(), actor_id=user.id)
    except (store_actions.WrongPickupCode, store_actions.PickupCodeLocked) as exc:
        if isinstance(exc, store_actions.WrongPickupCode):
            # The failed try counts although the answer is a refusal (as in the API).
            db.commit()
        else:
            db.rollback()
        return _board_refusal(
            request,
            db,
            user,
            store,
            exc,
            handover_errors={str(order.id): exc.message},
        )
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "handed_over", order_id)


# --- prescriptions (pharmacist) ------------------------------------------------------------

# Issued prescriptions that expire within this are reviewed first.
EXPIRY_URGENT = timedelta(hours=2)
QUEUE_LIMIT = 100


def _store_prescription(db: DbSession, user: User, store: Store, prescription_id: str):
    """A prescription the user may see whose order belongs to this store; 404 otherwise."""
    pid = queries.parse_uuid(prescription_id, "prescription")
    p = prescriptions_service.get_visible(db, user, pid)
    order = db.get(Order, p.order_id)
    if order is None or order.store_id != store.id:
        raise NotFound("No such prescription.", code="prescription_not_found")
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
    items, _ = prescriptions_service.queue(db, user, limit=QUEUE_LIMIT, cursor=None)
    now = datetime.now(UTC)
    rows = []
    for item in items:
        if item.get("store_id") != store.id:
            continue
        p = prescriptions_service.get_visible(db, user, item["id"])
        view = prescriptions_service.to_view(db, user, p)
        expiring = item["expires_at"] is not None and item["expires_at"] - now <= EXPIRY_URGENT
        rows.append({**item, "view": view, "expiring": expiring})
    rows.sort(key=lambda r: (not (r["overdue"] or r["expiring"]), -r["waited_minutes"]))
    return render(
        request,
        "prescription_queue.html",
        {
            **store_context(db, user, store, "prescriptions"),
            "title": f"Prescriptions · {store.name}",
            "rows": rows,
            "now": now,
            "review_minutes": get_settings().prescription_review_minutes,
            "notice": _notice(done),
        },
    )


def _signature_state(db: DbSession, p) -> str:
    """ "valid", "invalid", "key_revoked" or "unsigned", checked now against the doctor's key."""
    if p.signature is None:
        return "unsigned"
    verifies, key = prescriptions_service.verify_stored_signature(db, p)
    if key is not None and key.status is DoctorKeyStatus.REVOKED:
        return "key_revoked"
    return "valid" if verifies else "invalid"


def _order_lines(db: DbSession, order: Order) -> list[dict]:
    names = queries.product_labels(db, [line.product_id for line in order.lines])
    return [
        {
            "product_id": line.product_id,
            "name": names.get(line.product_id, f"Product {line.product_id}"),
            "quantity": line.quantity,
            "rx_only": line.rx_only,
        }
        for line in order.lines
    ]


def _prescription_context(
    db: DbSession, user: User, store: Store, p, order: Order, **extra
) -> dict:
    view = prescriptions_service.to_view(db, user, p)
    document = prescriptions_service.signed_document(p) if p.signed_payload else None
    prescribed = (document or {}).get("items") or view["items"] or []
    lines = _order_lines(db, order)
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
    audit = prescriptions_service.audit_entries(db, user, p.id, limit=100, after_id=None)
    actors = {
        u.id: u.name
        for u in db.scalars(
            select(User).where(User.id.in_({a.actor_id for a in audit if a.actor_id}))
        )
    }
    now = datetime.now(UTC)
    return {
        **store_context(db, user, store, "prescriptions"),
        "title": f"Prescription for {view['patient']['legal_name']}",
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
    return _attachment_response(prescriptions_service.attachment_for(db, user, p.id), p.id)


def _attachment_response(att, prescription_id) -> Response:
    # Images are shown in the page; a PDF is downloaded, never rendered in the console's origin.
    disposition = "inline" if att.content_type.startswith("image/") else "attachment"
    extension = workflow.EXTENSIONS.get(att.content_type, "bin")
    filename = f"prescription-{prescription_id}.{extension}"
    return Response(
        content=att.data,
        media_type=att.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{filename}"',
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


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
            "Give a reason to reject the prescription."
            if decision == "reject"
            else "Choose approve or reject."
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
        prescriptions_service.review(db, user, p.id, body)
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


# --- doctor --------------------------------------------------------------------------------

DOCTOR_QUEUE_LIMIT = 50


@router.get("/doctor", name="doctor_queue")
def doctor_queue(
    request: Request,
    db: DbSession,
    doctor: DoctorUser,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Requests waiting for a doctor, and the ones this doctor has claimed, oldest first."""
    items, _ = prescriptions_service.queue(db, doctor, limit=DOCTOR_QUEUE_LIMIT, cursor=None)
    return render(
        request,
        "doctor_queue.html",
        {
            "title": "Prescription requests",
            "section": "doctor",
            "mine": [i for i in items if i.get("claimed_by_me")],
            "waiting": [i for i in items if not i.get("claimed_by_me")],
            "claim_minutes": get_settings().prescription_claim_minutes,
            "notice": _notice(done),
        },
    )


@router.post("/doctor/prescriptions/{prescription_id}/claim", name="doctor_claim")
def doctor_claim(
    request: Request, db: DbSession, doctor: DoctorUser, prescription_id: str
) -> Response:
    """Take a waiting request (of doctors claiming at once, one wins)."""
    pid = queries.parse_uuid(prescription_id, "prescription")
    prescriptions_service.claim(db, doctor, pid)
    url = console_url(request, "doctor_prescription", prescription_id=pid)
    return redirect(f"{url}?done=claimed")


def _doctor_context(db: DbSession, doctor: User, p, **extra) -> dict:
    order = db.get(Order, p.order_id)
    view = prescriptions_service.to_view(db, doctor, p)
    lines = _order_lines(db, order)
    return {
        "title": f"Request from {view['patient']['legal_name']}",
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
    return prescriptions_service.get_visible(db, doctor, pid)


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
        request, "doctor_prescription.html", _doctor_context(db, doctor, p, notice=_notice(done))
    )


@router.get("/doctor/prescriptions/{prescription_id}/attachment", name="doctor_attachment")
def doctor_attachment(db: DbSession, doctor: DoctorUser, prescription_id: str) -> Response:
    """The patient's photo or PDF, for the doctor who claimed the request."""
    p = _doctor_prescription(db, doctor, prescription_id)
    return _attachment_response(prescriptions_service.attachment_for(db, doctor, p.id), p.id)


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


def _form_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        if loc[:1] == ["items"] and len(loc) >= 3:
            where = f"Medicine {int(loc[1]) + 1}, {loc[2].replace('_', ' ')}"
        elif loc:
            where = loc[0].replace("_", " ").capitalize()
        else:
            where = "Form"
        problems.append(f"{where}: {err.get('msg', '').removeprefix('Value error, ')}")
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
        payload, key, sign_by = prescriptions_service.prepare_signing_payload(
            db, doctor, p.id, body
        )
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
            raise InvalidInput("Sign the prescription first, or paste the signature.")
        prescriptions_service.issue(db, doctor, p.id, payload, signature)
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
            _doctor_context(db, doctor, p, decline_error="Give a reason to decline."),
            status_code=422,
        )
    prescriptions_service.decline(db, doctor, p.id, reason.strip())
    return redirect(console_url(request, "doctor_queue") + "?done=declined")


# --- SLA -----------------------------------------------------------------------------------

SLA_DEFAULT_DAYS = 14
# One report query per day drawn; a quarter is plenty on a tablet-sized chart.
SLA_MAX_DAYS = 92
SLA_TARGET = 0.95


def _day_bounds(store: Store, day: date) -> tuple[datetime, datetime]:
    tz = queries.store_zone(store)
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)


def _daily_rates(db: DbSession, store: Store, start: date, end: date) -> list[svg.DayRate]:
    """Deliveries and on-time deliveries per day of the store's calendar, for the chart."""
    days = []
    day = start
    while day <= end:
        day_from, day_to = _day_bounds(store, day)
        stats = sla_reports.delivery_stats(db, from_=day_from, to=day_to, store_id=store.id)
        days.append(svg.DayRate(day, stats["delivered"], stats["on_time"]))
        day += timedelta(days=1)
    return days


def _today_map(db: DbSession, store: Store) -> str:
    """The store, its delivery zone and today's drop-offs (open, on time or late), as SVG."""
    location = to_latlon(store.location)
    dropoffs = [
        svg.MapPoint(
            d.lat,
            d.lon,
            f"Order {str(d.order_id)[:8]}: {d.status.value.replace('_', ' ')}",
            "open" if d.on_time is None else ("on_time" if d.on_time else "late"),
        )
        for d in queries.todays_dropoffs(db, store)
    ]
    return svg.delivery_map(
        svg.MapPoint(location["lat"], location["lon"], store.name),
        area_geojson(store.delivery_zone),
        dropoffs,
    )


def _sla_figures(db: DbSession, store: Store, start: date, end: date) -> dict:
    """The dispatch SLA report for the period, per day for the chart, and today's map."""
    period_from, _ = _day_bounds(store, start)
    _, period_to = _day_bounds(store, end)
    days = _daily_rates(db, store, start, end)
    return {
        "report": sla_reports.sla_report(db, store, from_=period_from, to=period_to),
        "days": days,
        "chart_svg": svg.on_time_chart(days, target=SLA_TARGET),
        "map_svg": _today_map(db, store),
    }


def _sla_period(store: Store, start: date | None, end: date | None) -> tuple[date, date]:
    today = queries.store_today(store)
    end = end or today
    start = start or end - timedelta(days=SLA_DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput("The start of the period must not be after its end.")
    if (end - start).days + 1 > SLA_MAX_DAYS:
        raise InvalidInput(f"Show at most {SLA_MAX_DAYS} days at a time.")
    return start, end


@router.get("/stores/{store_id}/sla", name="sla_page")
def sla_page(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
) -> Response:
    """On-time rate, p50/p95 and breaches for a period, with the chart and today's map."""
    start, end = _sla_period(store, from_, to)
    return render(
        request,
        "sla.html",
        {
            **store_context(db, user, store, "sla"),
            "title": f"SLA · {store.name}",
            "start": start,
            "end": end,
            "target": SLA_TARGET,
            **_sla_figures(db, store, start, end),
        },
    )


def _svg_response(content: str) -> Response:
    return Response(content, media_type="image/svg+xml")


@router.get("/stores/{store_id}/sla/chart.svg", name="sla_chart")
def sla_chart(
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
) -> Response:
    """The on-time chart alone, as an SVG file."""
    start, end = _sla_period(store, from_, to)
    return _svg_response(svg.on_time_chart(_daily_rates(db, store, start, end), target=SLA_TARGET))


@router.get("/stores/{store_id}/sla/map.svg", name="sla_map")
def sla_map(db: DbSession, user: StaffUser, store: StorePage) -> Response:
    """The store, its zone and today's drop-offs, as an SVG file."""
    return _svg_response(_today_map(db, store))
