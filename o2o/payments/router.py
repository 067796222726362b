"""Payments API: payment apps (admin), the signed event endpoint (payment apps), the report."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status

from o2o.api import ApiRoute, RowId
from o2o.db import DbSession
from o2o.errors import InvalidInput, error_responses
from o2o.i18n import gettext as _
from o2o.payments import apps, intake, report
from o2o.payments.schemas import (
    PaymentAppCreatedOut,
    PaymentAppIn,
    PaymentAppOut,
    PaymentEventIn,
    PaymentEventOut,
    PaymentsReportOut,
)
from o2o.users.dependencies import AdminUser

router = APIRouter(route_class=ApiRoute, tags=["payments"])

# The most an event body may be: a few hundred bytes are enough.
MAX_EVENT_BYTES = 16 * 1024


@router.post(
    "/admin/payment-apps",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentAppCreatedOut,
    responses=error_responses(e409="payment_app_exists"),
)
def create_payment_app(body: PaymentAppIn, session: DbSession, admin: AdminUser):
    """Register a payment app; its signing secret is shown in this answer only."""
    app, secret = apps.register_app(session, name=body.name, webhook_url=str(body.webhook_url))
    return PaymentAppCreatedOut(id=app.id, name=app.name, secret=secret)


@router.get("/admin/payment-apps")
def list_payment_apps(session: DbSession, admin: AdminUser) -> dict:
    """List the payment apps (without their secrets)."""
    items = [
        PaymentAppOut.model_validate(a).model_dump(mode="json") for a in apps.list_apps(session)
    ]
    return {"items": items, "next_cursor": None}


@router.post(
    "/admin/payment-apps/{app_id}/rotate-secret",
    response_model=PaymentAppCreatedOut,
    responses=error_responses(e404="payment_app_not_found"),
)
def rotate_payment_app_secret(app_id: RowId, session: DbSession, admin: AdminUser):
    """Give a payment app a new secret (shown once); the old one verifies for a grace period."""
    app, secret = apps.rotate_secret(session, app_id)
    return PaymentAppCreatedOut(
        id=app.id, name=app.name, secret=secret, previous_secret_until=app.previous_secret_until
    )


async def raw_body(request: Request) -> bytes:
    """Read the body as sent: the signature covers these exact bytes."""
    body = await request.body()
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidInput(_("The event body is too large."), code="body_too_large")
    return body


@router.post(
    "/payments/events",
    response_model=PaymentEventOut,
    responses=error_responses(
        e401="invalid_signature (unknown app, no or wrong signature), stale_timestamp (more than "
        "5 minutes off)",
        e404="payment_not_found",
        e409="payment_not_captured: a refund reported before its capture (send it again later)",
        e422=(
            "amount_mismatch",
            "unknown_refund",
            "unknown_charge",
            "event_id_reused",
            "not_an_online_payment",
            "body_too_large",
        ),
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentEventIn.model_json_schema()}},
        }
    },
)
def receive_payment_event(
    session: DbSession,
    raw: Annotated[bytes, Depends(raw_body)],
    x_payment_app: Annotated[str | None, Header(max_length=20)] = None,
    x_payment_timestamp: Annotated[str | None, Header(max_length=20)] = None,
    x_payment_signature: Annotated[str | None, Header(max_length=200)] = None,
):
    """Apply an event from a payment app (signed; idempotent by event_id)."""
    received = intake.receive(
        session,
        apps.SignedHeaders(x_payment_app, x_payment_timestamp, x_payment_signature),
        raw,
    )
    return PaymentEventOut(
        event_id=intake.parse(raw).event_id,
        applied=received.applied,
        outcome=received.outcome,
        payment_id=received.payment.id,
        payment_status=received.payment.status,
    )


@router.get(
    "/admin/payments/report",
    response_model=PaymentsReportOut,
    responses=error_responses(e422=("invalid_range", "range_too_long")),
)
def payments_report(
    session: DbSession,
    admin: AdminUser,
    from_: Annotated[date, Query(alias="from")],
    to: Annotated[date, Query()],
):
    """Reconcile money per store-local day, per store and in total."""
    return report.payments_report(session, from_day=from_, to_day=to)
