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
DEMO_LEADER = "leader@example.com"


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
    DemoAccount(DEMO_LEADER, "Lin Leader (社区团长)", Role.LEADER),
)

# Community pickup points in Shanghai (name, address, lat, lon), each served by the nearest of
# the first demo stores; the demo leader stands behind all of them. 10% commission, as in the
# community group-buying articles the feature comes from.
DEMO_PICKUP_POINTS = (
    ("Lobby of Jing'an Garden Block 3", "Lane 188 Wuding Road, Jing'an", 31.2337, 121.4541),
    ("Huangpu Neighbourhood Convenience Store", "56 Yunnan South Road, Huangpu", 31.2288, 121.4815),
    ("Xintiandi Residents' Hall", "99 Taicang Road, Huangpu", 31.2220, 121.4741),
    ("Nanjing West Road Community Shop", "1025 Nanjing West Road, Jing'an", 31.2312, 121.4606),
)
DEMO_COMMISSION_RATE_BP = 1000


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
    """Load the demo accounts and the demo city; the demo pharmacist works at every demo store
    and sees the console in Chinese."""
    # Imported here: the core sits below the stores domain and never imports it at load time.
    from dispatch import service as dispatch_service
    from stores.demo import load_demo_city

    created = load_demo_accounts(session)
    city = load_demo_city(session)
    pharmacist = users_service.get_by_email(session, DEMO_PHARMACIST)
    users_service.link_stores(session, pharmacist, city.store_ids)
    # The demo city is Shanghai: its pharmacist reads the console in Chinese until switching
    # (a choice made with the switch is kept when the demo data is loaded again).
    if pharmacist.language is None:
        pharmacist.language = "zh_CN"
    # The demo courier works from the first demo store, so the job board has jobs to show.
    courier = users_service.get_by_email(session, DEMO_COURIER)
    dispatch_service.give_home_store(session, courier.id, city.store_ids[0])
    load_demo_interactions(session)
    load_demo_pickup_points(session, city.store_ids)
    # Eight weeks of counter sales and members at every level (stock analytics, membership).
    from o2o.demo_sales import load_demo_sales

    load_demo_sales(session, city.store_ids)
    return created, city


def load_demo_pickup_points(session: Session, store_ids: list[int]) -> int:
    """Register the demo pickup points that do not exist yet, each with the nearest demo store
    within a run's reach; return how many were created."""
    from sqlalchemy import func, select

    from o2o.config import get_settings
    from o2o.geo import point_wkt
    from stores.models import Store
    from stores.pickup_points import PickupPoint, create_point

    leader = users_service.get_by_email(session, DEMO_LEADER)
    created = 0
    for name, address, lat, lon in DEMO_PICKUP_POINTS:
        if session.scalar(select(PickupPoint.id).where(PickupPoint.name == name)) is not None:
            continue
        here = func.ST_GeogFromText(point_wkt(lat, lon))
        store = session.scalar(
            select(Store)
            .where(
                Store.id.in_(store_ids),
                func.ST_DWithin(Store.location, here, get_settings().dispatch_radius_m),
            )
            .order_by(func.ST_Distance(Store.location, here), Store.id)
            .limit(1)
        )
        if store is None:
            continue
        create_point(
            session,
            store,
            name=name,
            address=address,
            lat=lat,
            lon=lon,
            opening_hours=None,
            leader_user_id=leader.id,
            commission_rate_bp=DEMO_COMMISSION_RATE_BP,
            run_times=None,
        )
        created += 1
    return created


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
