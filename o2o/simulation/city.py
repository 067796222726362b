"""The simulation's database: users made in bulk, and a fresh day on the demo city."""

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from o2o.config import get_settings
from o2o.users.models import Role


def fast_users(session: Session, role: Role, n: int, *, tag: str = "") -> list[int]:
    """Users nobody signs in as (an unusable password hash: hashing is slow by design)."""
    rows = session.scalars(
        text(
            """
            INSERT INTO users (email, name, password_hash, role)
            SELECT 'sim-' || :role || :tag || '-' || g || '@sim.example.com',
                   initcap(:role) || ' ' || g, '!', CAST(:role AS user_role)
            FROM generate_series(1, :n) g
            RETURNING id
            """
        ),
        {"role": role.value, "tag": tag, "n": n},
    ).all()
    return list(rows)


# Kept from one simulated day to the next: loading the demo city is the slow part of a day's
# setup, and its stock is pushed again anyway (the inventory syncs are emptied).
CITY_TABLES = ("stores", "products", "lots", "product_stock_stats")


def reset_day(session: Session) -> None:
    """Empty the simulation's database for a fresh day, keeping the demo city's stores and lots."""
    kept = ("alembic_version", "spatial_ref_sys", *CITY_TABLES)
    listing = text(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> ALL(:kept) ORDER BY tablename"
    )
    owner_url = get_settings().owner_database_url
    if owner_url is None:
        tables = session.scalars(listing, {"kept": list(kept)}).all()
        session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        # The runtime role may not TRUNCATE (nor empty the audit trail): the owner does.
        owner = create_engine(owner_url.get_secret_value(), poolclass=NullPool)
        with owner.begin() as conn:
            tables = conn.scalars(listing, {"kept": list(kept)}).all()
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        owner.dispose()
    # Nothing is reserved once the orders are gone; the stock push then sets what is on hand.
    session.execute(text("UPDATE lots SET reserved = 0 WHERE reserved <> 0"))
