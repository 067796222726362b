"""Load the interaction table from the chain's licensed source, as a CSV, all or nothing.

The file is streamed with COPY into a temporary table and checked there with set-based queries
(missing values, substances too long, a substance paired with itself, unknown severities, a pair
given twice in either order). Any refused row refuses the whole file, naming the line and the
reason of each; otherwise the table is replaced in the same transaction, so readers see the old
table or the new one, never a mix.

Lines starting with `#` before the header are comments (the demonstration file says there what
it is); line numbers count them, so they match what an editor shows.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import InvalidInput
from o2o.i18n import gettext
from prescriptions import substances

CSV_COLUMNS = ("substance_a", "substance_b", "severity", "advice")
CHUNK_BYTES = 1 << 20
MAX_ADVICE_LENGTH = 2000
# A file with more bad rows than this is reported by its first rows and the count.
MAX_REPORTED_ROWS = 1000

_CREATE_TMP = """
CREATE TEMP TABLE tmp_interactions (
    row_no bigint GENERATED ALWAYS AS IDENTITY,
    substance_a text, substance_b text, severity text, advice text,
    code_a text, code_b text, problem text
) ON COMMIT DROP
"""
_COPY = (
    f"COPY tmp_interactions ({', '.join(CSV_COLUMNS)}) FROM STDIN WITH (FORMAT csv, HEADER MATCH)"
)
# Python's `substances.normalize`, in SQL: lower case, whitespace runs made one space.
_NORMALIZE = """
UPDATE tmp_interactions SET
    code_a = lower(btrim(regexp_replace(substance_a, '\\s+', ' ', 'g'))),
    code_b = lower(btrim(regexp_replace(substance_b, '\\s+', ' ', 'g'))),
    severity = lower(btrim(severity)),
    advice = btrim(advice)
"""
_SEVERITIES = ", ".join(f"'{s}'" for s in substances.SEVERITIES)

# (problem, reason shown for each row, UPDATE marking the rows that have it); each runs over the
# rows not marked yet, so a row reports its first problem.
_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "missing_value",
        "a substance, the severity or the advice is empty",
        """
        UPDATE tmp_interactions SET problem = :problem
        WHERE problem IS NULL AND (coalesce(code_a, '') = '' OR coalesce(code_b, '') = ''
            OR coalesce(severity, '') = '' OR coalesce(advice, '') = '')
        """,
    ),
    (
        "invalid_substance",
        f"a substance name is longer than {substances.MAX_CODE_LENGTH} characters",
        f"""
        UPDATE tmp_interactions SET problem = :problem
        WHERE problem IS NULL AND (length(code_a) > {substances.MAX_CODE_LENGTH}
            OR length(code_b) > {substances.MAX_CODE_LENGTH})
        """,
    ),
    (
        "same_substance",
        "both substances of the pair are the same",
        """
        UPDATE tmp_interactions SET problem = :problem
        WHERE problem IS NULL AND code_a = code_b
        """,
    ),
    (
        "unknown_severity",
        f"the severity is not one of {', '.join(substances.SEVERITIES)}",
        f"""
        UPDATE tmp_interactions SET problem = :problem
        WHERE problem IS NULL AND severity NOT IN ({_SEVERITIES})
        """,
    ),
    (
        "advice_too_long",
        f"the advice is longer than {MAX_ADVICE_LENGTH} characters",
        f"""
        UPDATE tmp_interactions SET problem = :problem
        WHERE problem IS NULL AND length(advice) > {MAX_ADVICE_LENGTH}
        """,
    ),
    (
        "duplicate_pair",
        "the same pair of substances (in either order) is on another line too",
        """
        UPDATE tmp_interactions AS t SET problem = :problem
        FROM (
            SELECT least(code_a COLLATE "C", code_b COLLATE "C") AS a,
                   greatest(code_a COLLATE "C", code_b COLLATE "C") AS b
            FROM tmp_interactions WHERE problem IS NULL GROUP BY 1, 2 HAVING count(*) > 1
        ) AS d
        WHERE t.problem IS NULL
          AND least(t.code_a COLLATE "C", t.code_b COLLATE "C") = d.a
          AND greatest(t.code_a COLLATE "C", t.code_b COLLATE "C") = d.b
        """,
    ),
)
_REASON = {problem: reason for problem, reason, _ in _CHECKS}

_REFUSED = f"""
SELECT row_no, problem, substance_a, substance_b FROM tmp_interactions
WHERE problem IS NOT NULL ORDER BY row_no LIMIT {MAX_REPORTED_ROWS}
"""
_REPLACE = [
    # Another import waits here until this one commits (readers are not blocked), so its DELETE
    # then sees these rows instead of colliding with them on insert.
    "LOCK TABLE drug_interactions IN EXCLUSIVE MODE",
    "DELETE FROM drug_interactions",
    """
    INSERT INTO drug_interactions (substance_a, substance_b, severity, advice, imported_at)
    SELECT least(code_a COLLATE "C", code_b COLLATE "C"),
           greatest(code_a COLLATE "C", code_b COLLATE "C"), severity, advice, :at
    FROM tmp_interactions ORDER BY 1, 2
    """,
]


@dataclass(frozen=True)
class RefusedRow:
    line: int
    problem: str
    reason: str
    substances: tuple[str | None, str | None]

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "problem": self.problem,
            "reason": self.reason,
            "substance_a": self.substances[0],
            "substance_b": self.substances[1],
        }


@dataclass
class InteractionImportResult:
    rows: int = 0
    written: int = 0
    replaced: int = 0  # rows of the previous table
    refused_rows: int = 0
    refused: list[RefusedRow] = field(default_factory=list)


def _skip_comments(stream: BinaryIO) -> tuple[bytes, int, int]:
    """Read past the leading `#` lines; return the first other line, how many lines were
    skipped and their bytes."""
    skipped = size = 0
    while True:
        line = stream.readline()
        if not line.lstrip().startswith(b"#"):
            return line, skipped, size
        skipped += 1
        size += len(line)


def _copy(
    session: Session,
    first_line: bytes,
    stream: BinaryIO,
    skipped: int,
    on_progress: Callable[[int], None],
) -> None:
    raw = session.connection().connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.write(first_line)
            on_progress(len(first_line))
            while chunk := stream.read(CHUNK_BYTES):
                copy.write(chunk)
                on_progress(len(chunk))
    except psycopg.DataError as exc:  # quoting, header, column count
        diag = exc.diag
        context = diag.context or ""
        # COPY counts lines from the header; the file has the comment lines before it.
        context = re.sub(
            r"line (\d+)", lambda m: f"line {int(m.group(1)) + skipped}", context
        ).strip()
        where = f" ({context})" if context else ""
        raise InvalidInput(
            gettext("The CSV could not be read: {message_primary}{where}.").format(
                message_primary=diag.message_primary, where=where
            ),
            code="invalid_csv",
            details={"expected_header": ",".join(CSV_COLUMNS)},
        ) from None


def import_interactions_csv(
    session: Session,
    stream: BinaryIO,
    *,
    on_progress: Callable[[int], None] = lambda n: None,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> InteractionImportResult:
    """Replace the interaction table with the CSV's pairs (header: CSV_COLUMNS), all or nothing:
    any bad row refuses the file (422 rows_refused, with the line and reason of each)."""
    result = InteractionImportResult()
    first_line, skipped, comment_bytes = _skip_comments(stream)
    on_progress(comment_bytes)
    # A savepoint: a refused file leaves nothing behind, not even the temporary table.
    with session.begin_nested():
        session.execute(text("DROP TABLE IF EXISTS pg_temp.tmp_interactions"))
        session.execute(text(_CREATE_TMP))
        _copy(session, first_line, stream, skipped, on_progress)
        on_phase("checking rows")
        session.execute(text(_NORMALIZE))
        result.rows = session.scalar(text("SELECT count(*) FROM tmp_interactions"))
        for problem, _, sql in _CHECKS:
            session.execute(text(sql), {"problem": problem})
        result.refused_rows = session.scalar(
            text("SELECT count(*) FROM tmp_interactions WHERE problem IS NOT NULL")
        )
        # Line numbers: the comments, then the header (line skipped + 1), then row 1.
        result.refused = [
            RefusedRow(
                row.row_no + skipped + 1,
                row.problem,
                _REASON[row.problem],
                (row.substance_a, row.substance_b),
            )
            for row in session.execute(text(_REFUSED))
        ]
        if result.refused_rows:
            shown = (
                ""
                if result.refused_rows <= MAX_REPORTED_ROWS
                else f" (the first {MAX_REPORTED_ROWS} are listed)"
            )
            raise InvalidInput(
                gettext(
                    "{refused_rows} of {rows} rows are refused{shown}; nothing was imported."
                ).format(refused_rows=result.refused_rows, rows=result.rows, shown=shown),
                code="rows_refused",
                details={
                    "rows": result.rows,
                    "refused_rows": result.refused_rows,
                    "refused": [r.as_dict() for r in result.refused],
                },
            )
        on_phase("replacing the interaction table")
        session.execute(text(_REPLACE[0]))
        result.replaced = session.execute(text(_REPLACE[1])).rowcount
        result.written = session.execute(text(_REPLACE[2]), {"at": clock.now()}).rowcount
    return result
