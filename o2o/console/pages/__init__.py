"""The console's pages, one module per area; `router` holds them in the order they match."""

from fastapi import APIRouter

from o2o.console.pages import (
    analytics,
    board,
    doctor,
    language,
    payments,
    prescriptions,
    signin,
    sla,
    stores,
)

router = APIRouter()
for area in (signin, language, stores, board, prescriptions, doctor, sla, payments, analytics):
    router.include_router(area.router)
