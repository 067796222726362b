"""The patient's coded allergies (`/users/me/allergies`) and the substance codes they are chosen
from (`/substances`). The pharmacist reads a patient's allergies, with the warnings they raise,
in the prescription and the order they review."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from o2o.api import ApiRoute
from o2o.db import DbSession
from o2o.errors import InvalidInput, error_responses
from o2o.i18n import gettext as _
from o2o.users.dependencies import CurrentUser, PatientUser
from prescriptions import safety, substances
from prescriptions.schemas import AllergiesIn, AllergiesOut, SubstancePage

router = APIRouter(route_class=ApiRoute, tags=["pharmacy safety"])


def _check_known(session: Session, codes: list[str]) -> None:
    known = safety.known_substances(session)
    unknown = sorted(code for code in codes if code not in known)
    if unknown:
        raise InvalidInput(
            _("These substances are not known: use a code from GET /substances."),
            code="unknown_substance",
            details={"unknown": unknown},
        )


@router.get("/users/me/allergies", response_model=AllergiesOut)
def my_allergies(patient: PatientUser, session: DbSession):
    """Your recorded allergies."""
    return {"allergies": safety.allergy_view(safety.allergies_of(session, patient.id))}


@router.put(
    "/users/me/allergies",
    response_model=AllergiesOut,
    responses=error_responses(e422=("unknown_substance", "duplicate_allergy")),
)
def set_my_allergies(body: AllergiesIn, patient: PatientUser, session: DbSession):
    """Replace your allergies with this list of coded substances (an empty list: none known)."""
    _check_known(session, [a.code for a in body.allergies])
    allergies = safety.set_allergies(
        session,
        patient.id,
        [
            substances.Allergy(a.code, a.display or substances.display_name(a.code), a.reaction)
            for a in body.allergies
        ],
    )
    return {"allergies": safety.allergy_view(allergies)}


@router.get("/substances", response_model=SubstancePage)
def list_substances(
    user: CurrentUser,
    session: DbSession,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    """Substance codes to record allergies with (from the catalogue and the interaction table),
    alphabetical, matching `q` anywhere in the name."""
    return {"items": safety.search_substances(session, q, limit=limit)}
