"""Shared pieces of the console pages: notices, redirects, the store a page is about."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from o2o.console import queries
from o2o.console.auth import (
    StaffUser,
    check_store,
)
from o2o.db import DbSession
from o2o.errors import NotFound
from o2o.i18n import N_
from o2o.i18n import gettext as _
from o2o.orders.models import Order
from o2o.users.models import Role, User
from prescriptions import workflow
from stores.models import Store

# Messages shown after a redirect, chosen by key so a link cannot put arbitrary text on a page.
NOTICES = {
    "signed_out": N_("You are signed out."),
    "approved": N_("Prescription approved; the order is released to the store."),
    "rejected": N_("Prescription rejected; the order is cancelled and its stock returned."),
    "preparing": N_("Order moved to preparing."),
    "ready": N_("Order marked ready."),
    "handed_over": N_("Pickup handed over; the order is completed."),
    "claimed": N_("Request claimed; it is yours to issue or decline."),
    "issued": N_("Prescription issued and signed."),
    "declined": N_("Request declined."),
    "language": N_("Language changed."),
}


def notice(key: str | None) -> str | None:
    """The notice for a key, in the page's language (None for an unknown key)."""
    text = NOTICES.get(key or "")
    return _(text) if text is not None else None


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
        raise NotFound(_("No such store."), code="store_not_found")
    request.state.console_store = store
    return store


StorePage = Annotated[Store, Depends(store_page)]


def store_context(db: DbSession, user: User, store: Store, section: str) -> dict:
    return {"store": store, "stores": staff_stores(db, user), "section": section}


def order_lines(db: DbSession, order: Order) -> list[dict]:
    names = queries.product_labels(db, [line.product_id for line in order.lines])
    return [
        {
            "product_id": line.product_id,
            "name": names.get(line.product_id, _("Product {id}").format(id=line.product_id)),
            "quantity": line.quantity,
            "rx_only": line.rx_only,
        }
        for line in order.lines
    ]


def attachment_response(att, prescription_id) -> Response:
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
