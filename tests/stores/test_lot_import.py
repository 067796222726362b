"""The CSV bulk load of lots (COPY into a temporary table, set-based checks, one upsert) and the
`python -m o2o stores` commands, on the test's rolled-back session."""

import io
import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from o2o import clock
from o2o.errors import DomainError
from stores import cli as stores_cli
from stores.lot_import import CSV_COLUMNS, import_lots_csv
from stores.models import Lot, ProductStockStats, Store
from tests.factories import STORE_ZONE, make_product, make_store
from tests.stores.helpers import state, store_body

HEADER = ",".join(CSV_COLUMNS)
# The stores these tests build count days in STORE_ZONE.
EXPIRY = (clock.today(STORE_ZONE) + timedelta(days=400)).isoformat()


@pytest.fixture
def world(db):
    stores = [make_store(db), make_store(db)]
    products = [make_product(db), make_product(db)]
    return stores, products


def csv_of(*rows: tuple) -> io.BytesIO:
    lines = [HEADER, *(",".join(str(v) for v in row) for row in rows)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def row(store, product, lot="L1", on_hand=10, price=1850, currency="CNY", gtin=None, expiry=EXPIRY):
    return (store.id, gtin or product.gtin, lot, expiry, on_hand, price, currency)


def lots_of(db) -> dict:
    rows = db.execute(
        select(Lot.store_id, Lot.product_id, Lot.lot_number, Lot.on_hand).order_by(Lot.id)
    )
    return {(s, p, n): q for s, p, n, q in rows}


def refused(exc_info) -> dict:
    error = exc_info.value
    assert error.code == "rows_refused"
    return error.details


def test_a_csv_loads_lots_for_many_stores_and_refreshes_stock_counts(db, world):
    (s1, s2), (p1, p2) = world
    result = import_lots_csv(
        db,
        csv_of(row(s1, p1), row(s1, p2, on_hand=3), row(s2, p1, lot="X9", on_hand=0)),
    )
    assert (result.rows, result.written, result.refused) == (3, 3, [])
    assert lots_of(db) == {
        (s1.id, p1.id, "L1"): 10,
        (s1.id, p2.id, "L1"): 3,
        (s2.id, p1.id, "X9"): 0,
    }
    counts = dict(
        db.execute(select(ProductStockStats.product_id, ProductStockStats.store_count)).all()
    )
    assert counts == {p1.id: 1, p2.id: 1}  # s2 holds none of p1 to sell


def test_loading_again_sets_quantities_and_skips_unchanged_lots(db, world):
    (s1, _), (p1, p2) = world
    import_lots_csv(db, csv_of(row(s1, p1), row(s1, p2)))
    again = import_lots_csv(db, csv_of(row(s1, p1, on_hand=4), row(s1, p2)))
    assert (again.rows, again.written) == (2, 1)
    assert lots_of(db)[(s1.id, p1.id, "L1")] == 4


def test_a_gtin_written_with_leading_zeros_finds_its_product(db, world):
    (s1, _), (p1, _) = world
    import_lots_csv(db, csv_of(row(s1, p1, gtin="0" + p1.gtin)))
    assert lots_of(db) == {(s1.id, p1.id, "L1"): 10}


def test_unknown_stores_and_gtins_refuse_the_file_with_counts_and_samples(db, world):
    (s1, _), (p1, p2) = world
    ghost = Store(id=999_999)
    before = state(db)
    with pytest.raises(DomainError) as exc_info:
        import_lots_csv(
            db,
            csv_of(
                row(s1, p1),
                row(ghost, p1),
                row(ghost, p2, lot="L2"),
                row(s1, p1, lot="L3", gtin="4006381333931"),
            ),
        )
    details = refused(exc_info)
    assert details["unknown_store"]["rows"] == 2
    assert details["unknown_store"]["sample"][0].startswith("line 3: store 999999")
    assert details["unknown_gtin"]["rows"] == 1
    assert "line 5" in details["unknown_gtin"]["sample"][0]
    assert "3 of 4 rows" in exc_info.value.message
    assert state(db) == before


def test_partial_loads_the_good_rows_and_reports_the_rest(db, world):
    (s1, _), (p1, _) = world
    result = import_lots_csv(db, csv_of(row(s1, p1), row(Store(id=999_999), p1)), partial=True)
    assert (result.rows, result.written, result.refused_rows) == (2, 1, 1)
    assert [r.problem for r in result.refused] == ["unknown_store"]
    assert lots_of(db) == {(s1.id, p1.id, "L1"): 10}


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"on_hand": -1}, "invalid_value"),
        ({"on_hand": 10**12}, "invalid_value"),
        ({"price": 10**10}, "invalid_value"),
        ({"currency": "cny"}, "invalid_value"),
        ({"lot": " L1"}, "invalid_value"),
        ({"lot": ""}, "invalid_value"),
        ({"gtin": "69012"}, "invalid_value"),
        ({"expiry": "1990-01-01"}, "invalid_value"),
        ({"currency": "USD"}, "currency_mismatch"),
    ],
)
def test_bad_values_are_refused_by_problem(db, world, overrides, problem):
    (s1, _), (p1, p2) = world
    before = state(db)
    with pytest.raises(DomainError) as exc_info:
        import_lots_csv(db, csv_of(row(s1, p2), row(s1, p1, **overrides)))
    assert list(refused(exc_info)) == [problem]
    assert state(db) == before


def test_a_lot_twice_in_the_file_is_refused(db, world):
    (s1, _), (p1, _) = world
    with pytest.raises(DomainError) as exc_info:
        import_lots_csv(db, csv_of(row(s1, p1, on_hand=1), row(s1, p1, on_hand=2)))
    assert refused(exc_info)["duplicate_lot"]["rows"] == 2


def test_on_hand_below_reserved_is_refused(db, world):
    (s1, _), (p1, _) = world
    import_lots_csv(db, csv_of(row(s1, p1, on_hand=10)))
    db.execute(update(Lot).values(reserved=6))
    before = state(db)
    with pytest.raises(DomainError) as exc_info:
        import_lots_csv(db, csv_of(row(s1, p1, on_hand=5)))
    assert refused(exc_info)["below_reserved"]["rows"] == 1
    assert state(db) == before


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"store_id,lot_number,gtin,expiry_date,on_hand,price_minor,currency\n", "header"),
        (f"{HEADER}\n1,6901234567892,L1,2027-01-01,lots,1,CNY\n".encode(), "line 2"),
        (f"{HEADER}\n1,6901234567892,L1,2027-13-01,1,1,CNY\n".encode(), "line 2"),
        (f"{HEADER}\n1,6901234567892,L1\n".encode(), "line 2"),
        (b"", "header"),
    ],
)
def test_an_unreadable_csv_is_refused_saying_where(db, world, content, hint):
    before = state(db)
    with pytest.raises(DomainError) as exc_info:
        import_lots_csv(db, io.BytesIO(content))
    assert exc_info.value.code == "invalid_csv"
    assert hint in exc_info.value.message.lower(), exc_info.value.message
    assert state(db) == before


@pytest.fixture
def runner(db, monkeypatch) -> CliRunner:
    """Run the store commands on the test's session (rolled back after the test)."""

    @contextmanager
    def scope():
        yield db

    monkeypatch.setattr(stores_cli, "session_scope", scope)
    return CliRunner()


def test_import_lots_command(runner, db, world, tmp_path):
    (s1, s2), (p1, _) = world
    path = tmp_path / "lots.csv"
    path.write_bytes(csv_of(row(s1, p1), row(s2, p1)).getvalue())
    result = runner.invoke(stores_cli.app, ["import-lots", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 row(s) read, 2 lot(s) written" in result.output
    assert len(lots_of(db)) == 2


def test_import_lots_command_reports_refusals(runner, db, world, tmp_path):
    (s1, _), (p1, _) = world
    path = tmp_path / "lots.csv"
    path.write_bytes(csv_of(row(s1, p1), row(Store(id=999_999), p1)).getvalue())
    result = runner.invoke(stores_cli.app, ["import-lots", str(path)])
    assert result.exit_code == 1
    assert "unknown_store" in result.output and "nothing was imported" in result.output
    assert lots_of(db) == {}


def test_import_stores_command(runner, db, tmp_path):
    def feature(**overrides):
        props = store_body(**overrides)
        props.pop("location")
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [121.47, 31.23]},
            "properties": props,
        }

    path = tmp_path / "stores.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [feature(name="CLI Pharmacy"), feature(timezone="Nowhere/Land")],
            }
        )
    )
    refused = runner.invoke(stores_cli.app, ["import-stores", str(path)])
    assert refused.exit_code == 1
    assert "nothing was imported" in refused.output and "Nowhere/Land" in refused.output
    assert db.scalar(select(Store.id).where(Store.name == "CLI Pharmacy")) is None

    partial = runner.invoke(stores_cli.app, ["import-stores", str(path), "--partial"])
    assert partial.exit_code == 0, partial.output
    assert "1 store(s) imported, 1 refused" in partial.output
    assert db.scalar(select(Store.id).where(Store.name == "CLI Pharmacy")) is not None

    path.write_text("{not json")
    assert runner.invoke(stores_cli.app, ["import-stores", str(path)]).exit_code == 2
