"""Bulk load of lots for many stores from a CSV, at COPY speed.

The file is streamed with COPY into a temporary table, checked there with set-based queries (bad
values, unknown stores and GTINs, repeated lots, foreign currencies, quantities below what orders
hold), and upserted into `lots` with one INSERT ... SELECT. Millions of rows take minutes, not
hours: there is no per-row round trip anywhere.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o.db import INT4_MAX
from o2o.errors import InvalidInput
from o2o.i18n import gettext
from stores import inventory
from stores.schemas import MAX_ON_HAND, MAX_PRICE_MINOR

CSV_COLUMNS = (
    "store_id",
    "gtin",
    "lot_number",
    "expiry_date",
    "on_hand",
    "price_minor",
    "currency",
)
CHUNK_BYTES = 1 << 20
SAMPLE_SIZE = 5

# Numbers are bigint here so an out-of-range value is reported as a refused row, not a COPY error.
_CREATE_TMP = """
CREATE TEMP TABLE tmp_lots (
    row_no bigint GENERATED ALWAYS AS IDENTITY,
    store_id bigint, gtin text, lot_number text, expiry_date date,
    on_hand bigint, price_minor bigint, currency text,
    problem text
) ON COMMIT DROP
"""
# HEADER MATCH: the first line must name the columns in this order, so a file with swapped
# columns is refused instead of loading prices as quantities.
_COPY = f"COPY tmp_lots ({', '.join(CSV_COLUMNS)}) FROM STDIN WITH (FORMAT csv, HEADER MATCH)"

# Matching GTINs padded to 14 digits: the same code may be written with 8, 12, 13 or 14.
_PRODUCT_JOIN = "JOIN products AS p ON lpad(p.gtin, 14, '0') = lpad(t.gtin, 14, '0')"

# (problem, what it means, UPDATE marking the rows that have it). Each runs over the rows not
# marked yet, so a row reports its first problem only.
_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "invalid_value",
        "a value is missing or out of range",
        f"""
        UPDATE tmp_lots SET problem = :problem
        WHERE problem IS NULL AND (
            store_id IS NULL OR gtin IS NULL OR lot_number IS NULL OR expiry_date IS NULL
            OR on_hand IS NULL OR price_minor IS NULL OR currency IS NULL
            OR store_id NOT BETWEEN 1 AND {INT4_MAX}
            OR gtin !~ '^([0-9]{{8}}|[0-9]{{12,14}})$'
            OR lot_number = '' OR length(lot_number) > 64 OR lot_number <> btrim(lot_number)
            OR expiry_date NOT BETWEEN DATE '2000-01-01' AND DATE '2099-12-31'
            OR on_hand NOT BETWEEN 0 AND {MAX_ON_HAND}
            OR price_minor NOT BETWEEN 0 AND {MAX_PRICE_MINOR}
            OR currency !~ '^[A-Z]{{3}}$')
        """,
    ),
    (
        "unknown_store",
        "no store has this store_id",
        """
        UPDATE tmp_lots AS t SET problem = :problem
        WHERE problem IS NULL AND NOT EXISTS (SELECT FROM stores AS s WHERE s.id = t.store_id)
        """,
    ),
    (
        "unknown_gtin",
        "no product has this GTIN",
        """
        UPDATE tmp_lots AS t SET problem = :problem
        WHERE problem IS NULL AND NOT EXISTS (
            SELECT FROM products AS p WHERE lpad(p.gtin, 14, '0') = lpad(t.gtin, 14, '0'))
        """,
    ),
    (
        "currency_mismatch",
        "the store sells in another currency",
        """
        UPDATE tmp_lots AS t SET problem = :problem
        FROM stores AS s
        WHERE t.problem IS NULL AND s.id = t.store_id AND s.currency <> t.currency
        """,
    ),
    (
        "duplicate_lot",
        "the same store, GTIN and lot number appear more than once",
        """
        UPDATE tmp_lots AS t SET problem = :problem
        FROM (
            SELECT store_id, lpad(gtin, 14, '0') AS gtin14, lot_number FROM tmp_lots
            WHERE problem IS NULL GROUP BY 1, 2, 3 HAVING count(*) > 1
        ) AS d
        WHERE t.problem IS NULL AND t.store_id = d.store_id
          AND lpad(t.gtin, 14, '0') = d.gtin14 AND t.lot_number = d.lot_number
        """,
    ),
    (
        "below_reserved",
        "on_hand is below what online orders have reserved",
        """
        UPDATE tmp_lots AS t SET problem = :problem
        FROM (
            SELECT l.store_id, lpad(p.gtin, 14, '0') AS gtin14, l.lot_number, l.reserved
            FROM lots AS l JOIN products AS p ON p.id = l.product_id
            WHERE l.reserved > 0
        ) AS r
        WHERE t.problem IS NULL AND t.store_id = r.store_id
          AND lpad(t.gtin, 14, '0') = r.gtin14 AND t.lot_number = r.lot_number
          AND t.on_hand < r.reserved
        """,
    ),
)
_MEANING = {problem: meaning for problem, meaning, _ in _CHECKS}

_SUMMARY = f"""
SELECT problem, count(*) AS rows,
       (array_agg(format('line %s: store %s, gtin %s, lot %s',
                         row_no + 1, store_id, gtin, lot_number) ORDER BY row_no))[1:{SAMPLE_SIZE}]
           AS sample
FROM tmp_lots WHERE problem IS NOT NULL GROUP BY problem ORDER BY problem
"""

_UPSERT = inventory.lot_upsert_sql(
    f"""
    SELECT t.store_id, p.id, t.lot_number, t.expiry_date, t.on_hand, t.price_minor, t.currency
    FROM tmp_lots AS t {_PRODUCT_JOIN}
    WHERE t.problem IS NULL
    -- In key order: index pages are filled in sequence, and concurrent loads lock alike.
    ORDER BY t.store_id, p.id, t.lot_number
    """
)
_TOUCHED_PRODUCTS = f"""
SELECT DISTINCT p.id FROM (SELECT DISTINCT gtin FROM tmp_lots WHERE problem IS NULL) AS t
{_PRODUCT_JOIN}
"""


@dataclass(frozen=True)
class RefusedRows:
    problem: str
    meaning: str
    rows: int
    sample: list[str]


@dataclass
class LotImportResult:
    rows: int = 0
    written: int = 0  # inserted or changed; unchanged lots are not rewritten
    products: int = 0
    refused: list[RefusedRows] = field(default_factory=list)

    @property
    def refused_rows(self) -> int:
        return sum(r.rows for r in self.refused)

    def refusal_details(self) -> dict[str, dict]:
        """Refused rows by problem: {problem: {"meaning", "rows", "sample"}}."""
        return {
            r.problem: {"meaning": r.meaning, "rows": r.rows, "sample": r.sample}
            for r in self.refused
        }


def _copy(session: Session, stream: BinaryIO, on_progress: Callable[[int], None]) -> None:
    raw = session.connection().connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            while chunk := stream.read(CHUNK_BYTES):
                copy.write(chunk)
                on_progress(len(chunk))
    except psycopg.DataError as exc:  # bad number, date, quoting, header, column count
        diag = exc.diag
        where = f" ({diag.context.strip()})" if diag.context else ""
        raise InvalidInput(
            gettext("The CSV could not be read: {message_primary}{where}.").format(
                message_primary=diag.message_primary, where=where
            ),
            code="invalid_csv",
            details={"expected_header": ",".join(CSV_COLUMNS)},
        ) from None


def import_lots_csv(
    session: Session,
    stream: BinaryIO,
    *,
    partial: bool = False,
    on_progress: Callable[[int], None] = lambda n: None,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> LotImportResult:
    """Upsert the lots of a CSV (header: CSV_COLUMNS); `on_hand` sets the quantity.

    All or nothing: any refused row refuses the file (422 rows_refused with a count and sample
    lines per problem); with `partial` the other rows are loaded and the refused ones reported.
    """
    result = LotImportResult()
    try:
        # A savepoint: a refused file leaves nothing behind, not even the temporary table.
        with session.begin_nested():
            session.execute(text("DROP TABLE IF EXISTS pg_temp.tmp_lots"))
            session.execute(text(_CREATE_TMP))
            _copy(session, stream, on_progress)
            on_phase("checking rows")
            session.execute(text("ANALYZE tmp_lots"))
            result.rows = session.scalar(text("SELECT count(*) FROM tmp_lots"))
            for problem, _, sql in _CHECKS:
                session.execute(text(sql), {"problem": problem})
            result.refused = [
                RefusedRows(row.problem, _MEANING[row.problem], row.rows, list(row.sample))
                for row in session.execute(text(_SUMMARY))
            ]
            if result.refused and not partial:
                raise InvalidInput(
                    gettext(
                        "{refused_rows} of {rows} rows are refused; nothing was imported."
                    ).format(refused_rows=result.refused_rows, rows=result.rows),
                    code="rows_refused",
                    details=result.refusal_details(),
                )
            on_phase("writing lots")
            result.written = session.execute(text(_UPSERT)).rowcount
            on_phase("refreshing stock statistics")
            product_ids = session.scalars(text(_TOUCHED_PRODUCTS)).all()
            result.products = len(product_ids)
            inventory.refresh_stock_stats(session, product_ids)
    except IntegrityError as exc:
        inventory.raise_if_below_reserved(exc)
        raise
    inventory.expire_lots(session)
    return result
