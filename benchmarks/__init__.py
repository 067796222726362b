"""Benchmarks: `make bench` runs each module here against its own database and prints figures."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def analyse(session: Session, *tables: str) -> None:
    """ANALYZE the tables a benchmark's world filled, before anyone works on them: PostgreSQL
    then plans for rows a live database holds, not for the empty tables it last saw."""
    for table in tables:
        session.execute(text(f"ANALYZE {table}"))
