"""Members API: a patient's own membership."""

from fastapi import APIRouter

from o2o.api import ApiRoute
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.members import service
from o2o.members.schemas import MembershipOut
from o2o.users.dependencies import PatientUser

router = APIRouter(route_class=ApiRoute, tags=["members"])


@router.get(
    "/users/me/membership",
    response_model=MembershipOut,
    responses=error_responses(e403="forbidden: only patients are members"),
)
def my_membership(session: DbSession, patient: PatientUser):
    """Show my points, level, the next level and what it takes, benefits and recent movements."""
    m = service.membership(session, patient.id)
    return MembershipOut(
        points=m.points,
        level=m.level.name,
        next_level=(
            {
                "level": m.next_level[0].name,
                "from_spend_minor": m.next_level[0].from_spend_minor,
                "spend_needed_minor": m.next_level[1],
            }
            if m.next_level
            else None
        ),
        spend_12m_minor=m.spend_12m_minor,
        benefits=[{"code": b.code, "description": b.description} for b in m.benefits],
        history=[
            {
                "kind": e.kind,
                "points": e.points,
                "spend_minor": e.spend_minor,
                "order_id": str(e.order_id) if e.order_id else None,
                "at": e.at,
                "expires_at": e.expires_at,
                "note": e.note,
            }
            for e in m.history
        ],
    )
