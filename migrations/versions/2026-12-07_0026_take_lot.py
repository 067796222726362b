"""take_lot(lot, units, min_expiry): reserve units of a lot, or fail the statement (SQLSTATE
O2S01) when the lot no longer holds them: a placement sends its lots' takes and its COMMIT in one
round trip, and a take that fails leaves the COMMIT nothing to commit

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 05:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The conditional take every reservation makes (stores.allocation); a lot's id is its
    # column's type (bigint). SECURITY INVOKER (the default): it runs with the caller's grants,
    # as the UPDATE itself would.
    op.execute(
        """
        CREATE FUNCTION take_lot(lot bigint, units integer, min_expiry date) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE lots SET reserved = reserved + units
            WHERE id = lot AND on_hand - reserved >= units AND expiry_date >= min_expiry;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'lot % no longer holds % sellable units', lot, units
                    USING ERRCODE = 'O2S01', DETAIL = lot::text;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION take_lot(bigint, integer, date)")
