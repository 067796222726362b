"""Demo data for development: the demo accounts of the API docs (and, from the stores issue on,
a demo city). Idempotent: running it again changes nothing that exists."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from o2o.users import service as users_service
from o2o.users.models import Role

if TYPE_CHECKING:
    from stores.demo import DemoCity

DEMO_PASSWORD = "demo-password"
DEMO_PHARMACIST = "pharmacist@example.com"
DEMO_COURIER = "courier@example.com"


@dataclass(frozen=True)
class DemoAccount:
    email: str
    name: str
    role: Role


DEMO_ACCOUNTS = (
    DemoAccount("admin@example.com", "Ada Admin", Role.ADMIN),
    DemoAccount("doctor@example.com", "Dr. Li Wei", Role.DOCTOR),
    DemoAccount(DEMO_PHARMACIST, "Pat Pharmacist", Role.PHARMACIST),
    DemoAccount(DEMO_COURIER, "Cory Courier", Role.COURIER),
    DemoAccount("patient@example.com", "Pia Patient", Role.PATIENT),
)


def load_demo_accounts(session: Session) -> list[str]:
    """Create the demo accounts that do not exist yet; return the emails created."""
    created = []
    for account in DEMO_ACCOUNTS:
        if users_service.get_by_email(session, account.email) is None:
            users_service.create_user(
                session,
                email=account.email,
                password=DEMO_PASSWORD,
                name=account.name,
                role=account.role,
            )
            created.append(account.email)
    return created


def load_demo(session: Session) -> tuple[list[str], "DemoCity"]:
    """Load the demo accounts and the demo city; the demo pharmacist works at every demo store."""
    # Imported here: the core sits below the stores domain and never imports it at load time.
    from dispatch import service as dispatch_service
    from stores.demo import load_demo_city

    created = load_demo_accounts(session)
    city = load_demo_city(session)
    pharmacist = users_service.get_by_email(session, DEMO_PHARMACIST)
    users_service.link_stores(session, pharmacist, city.store_ids)
    # The demo courier works from the first demo store, so the job board has jobs to show.
    courier = users_service.get_by_email(session, DEMO_COURIER)
    dispatch_service.give_home_store(session, courier.id, city.store_ids[0])
    load_demo_interactions(session)
    # Eight weeks of counter sales and members at every level (stock analytics, membership).
    from o2o.demo_sales import load_demo_sales

    load_demo_sales(session, city.store_ids)
    return created, city


DEMO_INTERACTIONS = (
    Path(__file__).resolve().parent.parent / "prescriptions" / "demo_interactions.csv"
)


def load_demo_interactions(session: Session) -> int:
    """Load the demonstration interaction table (marked as such, not clinical advice) when no
    table is loaded yet; a chain's own import is never overwritten. Returns the rows loaded."""
    from sqlalchemy import func, select

    from prescriptions import interaction_import
    from prescriptions.models import DrugInteraction

    if session.scalar(select(func.count()).select_from(DrugInteraction)):
        return 0
    with DEMO_INTERACTIONS.open("rb") as stream:
        return interaction_import.import_interactions_csv(session, stream).written
