"""Admin API of webhook endpoints: register one, list them, stop sending to one."""

from fastapi import APIRouter, Response, status

from o2o.api import ApiRoute, RowId
from o2o.db import DbSession
from o2o.users.dependencies import AdminUser
from o2o.webhooks import relay
from o2o.webhooks.schemas import WebhookCreatedOut, WebhookIn, WebhookOut

router = APIRouter(route_class=ApiRoute, tags=["webhooks"])


@router.post(
    "/admin/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreatedOut,
)
def create_webhook(body: WebhookIn, session: DbSession, admin: AdminUser):
    """Register a webhook endpoint; the signing secret is shown in this answer only."""
    return relay.create_endpoint(
        session,
        url=str(body.url),
        event_types=body.event_types,
        secret=body.secret,
        description=body.description,
    )


@router.get("/admin/webhooks")
def list_webhooks(session: DbSession, admin: AdminUser) -> dict:
    """List the webhook endpoints (without their secrets)."""
    items = [
        WebhookOut.model_validate(e).model_dump(mode="json") for e in relay.list_endpoints(session)
    ]
    return {"items": items, "next_cursor": None}


@router.delete("/admin/webhooks/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(endpoint_id: RowId, session: DbSession, admin: AdminUser):
    """Stop sending to an endpoint."""
    relay.deactivate_endpoint(session, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
