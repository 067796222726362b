"""Allergies and interactions, from data the chain loads: the interaction table imported from a
CSV all or nothing (each bad row named by line and reason), the patient's coded allergies, and
the warnings the pharmacist sees for an order against what the patient takes."""

import io
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from o2o import clock, demo
from o2o.errors import InvalidInput
from o2o.orders.models import OrderStatus
from prescriptions import interaction_import, pharmacy_cli
from prescriptions.models import DrugInteraction
from tests.factories import auth, make_lot, make_product
from tests.prescriptions.helpers import API, claim_and_issue, items_for, make_rx_order, request_rx

HEADER = "substance_a,substance_b,severity,advice\n"
GOOD = (
    HEADER + "Warfarin,aspirin,major,Bleeding risk: check with the prescriber.\n"
    "clarithromycin,simvastatin,contraindicated,Pause the statin.\n"
)


def load(db, text: str):
    return interaction_import.import_interactions_csv(db, io.BytesIO(text.encode()))


def table(db) -> dict:
    return {
        (r.substance_a, r.substance_b): (r.severity, r.advice)
        for r in db.scalars(select(DrugInteraction))
    }


def test_a_good_file_replaces_the_table_with_pairs_in_one_order(db):
    load(db, HEADER + "ibuprofen,warfarin,major,old row\n")
    result = load(db, GOOD)
    assert (result.rows, result.written, result.replaced) == (2, 2, 1)
    assert table(db) == {
        ("aspirin", "warfarin"): ("major", "Bleeding risk: check with the prescriber."),
        ("clarithromycin", "simvastatin"): ("contraindicated", "Pause the statin."),
    }


BAD = (
    "# a comment line, counted in the line numbers\n"
    + HEADER
    + "warfarin,ibuprofen,major,fine alone\n"  # line 3
    + "warfarin,,major,no partner\n"  # line 4
    + "aspirin, Aspirin ,minor,same substance\n"  # line 5
    + "omeprazole,clopidogrel,serious,not a severity\n"  # line 6
    + "Ibuprofen,warfarin,major,the pair of line 3 again\n"  # line 7
    + f"naproxen,warfarin,major,{'x' * 2001}\n"  # line 8
    + f"{'y' * 101},warfarin,major,too long a name\n"  # line 9
    + "naproxen,warfarin,major,a good row\n"  # line 10
)
EXPECTED = [
    (3, "duplicate_pair"),
    (4, "missing_value"),
    (5, "same_substance"),
    (6, "unknown_severity"),
    (7, "duplicate_pair"),
    (8, "advice_too_long"),
    (9, "invalid_substance"),
]


def test_bad_rows_refuse_the_file_naming_each_line_and_reason(db):
    load(db, GOOD)
    before = table(db)
    with pytest.raises(InvalidInput) as refused:
        load(db, BAD)
    assert refused.value.code == "rows_refused"
    details = refused.value.details
    assert (details["rows"], details["refused_rows"]) == (8, 7)
    assert [(r["line"], r["problem"]) for r in details["refused"]] == EXPECTED
    reasons = {r["line"]: r["reason"] for r in details["refused"]}
    assert reasons[5] == "both substances of the pair are the same"
    assert "contraindicated, major, moderate, minor" in reasons[6]
    assert table(db) == before  # nothing written


def test_an_unreadable_file_is_refused_saying_what_to_send(db):
    with pytest.raises(InvalidInput) as refused:
        load(db, "a,b,severity,advice\nwarfarin,aspirin,major,x\n")
    assert refused.value.code == "invalid_csv"
    assert refused.value.details == {"expected_header": "substance_a,substance_b,severity,advice"}
    with pytest.raises(InvalidInput) as refused:
        load(db, "# note\n" + HEADER + "warfarin,aspirin,major\n")
    assert refused.value.code == "invalid_csv" and "line 3" in refused.value.message


@pytest.fixture
def runner(db, monkeypatch) -> CliRunner:
    """Run the pharmacy commands on the test's session (rolled back after the test)."""

    @contextmanager
    def scope():
        yield db

    monkeypatch.setattr(pharmacy_cli, "session_scope", scope)
    return CliRunner()


def test_import_interactions_command(runner, db, tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text(GOOD)
    result = runner.invoke(pharmacy_cli.app, ["import-interactions", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 row(s) read, 2 interaction(s) loaded" in result.output
    assert len(table(db)) == 2


def test_import_interactions_command_lists_each_refused_line(runner, db, tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text(BAD)
    result = runner.invoke(pharmacy_cli.app, ["import-interactions", str(path)], terminal_width=200)
    assert result.exit_code == 1
    assert "7 of 8 rows are refused" in result.output and "nothing was imported" in result.output
    first_cells = {
        row.split("│")[1].strip() for row in result.output.splitlines() if row.count("│") > 2
    }
    assert {str(line) for line, _ in EXPECTED} <= first_cells, result.output
    assert all(problem in result.output for _, problem in EXPECTED)
    assert table(db) == {}


def test_the_demo_table_is_marked_as_demonstration_data_and_loads(db):
    text = demo.DEMO_INTERACTIONS.read_text()
    assert text.startswith("# DEMONSTRATION DATA, NOT CLINICAL ADVICE.")
    assert demo.load_demo_interactions(db) == 10
    rows = table(db)
    assert ("aspirin", "warfarin") in rows and ("clarithromycin", "simvastatin") in rows
    assert ("glyceryl trinitrate", "sildenafil") in rows
    assert all(
        advice.startswith("Demonstration data, not clinical advice") for _, advice in rows.values()
    )
    # A table the chain loaded is never overwritten by the demo.
    assert demo.load_demo_interactions(db) == 0


# --- warnings for the pharmacist -----------------------------------------------------------------


def _product(db, world, generic: str, *, rx: bool = False):
    product = make_product(db, rx_only=rx, name=f"{generic.title()} tablets", generic_name=generic)
    return product, make_lot(db, world.store, product, on_hand=20, days=400)


def _order(db, world, *products, patient=None, status=OrderStatus.AWAITING_PRESCRIPTION):
    lines = [(product, 1, lot) for product, lot in products]
    return make_rx_order(db, patient or world.patient, world.store, lines, status=status)


def test_an_order_combining_an_interacting_pair_warns_the_pharmacist(client, db, world):
    load(db, GOOD)
    warfarin = _product(db, world, "warfarin", rx=True)
    aspirin = _product(db, world, "aspirin")
    order = _order(db, world, warfarin, aspirin)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((warfarin[0], 1)))

    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.pharmacist))
    assert r.status_code == 200, r.text
    (warning,) = r.json()["safety"]["warnings"]
    assert warning["code"] == "interaction" and warning["severity"] == "major"
    assert warning["substances"] == ["aspirin", "warfarin"]
    assert warning["advice"] == "Bleeding risk: check with the prescriber."
    assert warning["interacts_with"]["source"] == "this_order"
    assert {warning["product_id"], warning["interacts_with"]["product_id"]} == {
        warfarin[0].id,
        aspirin[0].id,
    }
    r = client.get(f"{API}/orders/{order.id}", headers=auth(world.pharmacist))
    assert [w["code"] for w in r.json()["safety"]["warnings"]] == ["interaction"]
    # The review answer carries them too.
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200 and len(r.json()["safety"]["warnings"]) == 1
    # The patient is not shown the pharmacist's checks.
    assert (
        client.get(f"{API}/orders/{order.id}", headers=auth(world.patient)).json()["safety"] is None
    )
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient))
    assert r.json()["safety"] is None


def test_interactions_count_other_open_orders_and_recent_dispenses(client, db, world):
    load(db, GOOD)
    warfarin = _product(db, world, "warfarin", rx=True)
    clarithromycin = _product(db, world, "clarithromycin", rx=True)
    simvastatin = _product(db, world, "simvastatin", rx=True)
    aspirin = _product(db, world, "aspirin")
    open_order = _order(db, world, warfarin, status=OrderStatus.RELEASED)
    recent = _order(db, world, clarithromycin, status=OrderStatus.COMPLETED)
    recent.completed_at = clock.now() - timedelta(days=10)
    long_ago = _order(db, world, clarithromycin, status=OrderStatus.COMPLETED)
    long_ago.completed_at = clock.now() - timedelta(days=200)
    # Another patient's medicines are not this patient's.
    _order(db, world, warfarin, patient=world.other_patient, status=OrderStatus.RELEASED)
    db.flush()
    order = _order(db, world, aspirin, simvastatin)

    r = client.get(f"{API}/orders/{order.id}", headers=auth(world.pharmacist))
    found = [
        (
            w["severity"],
            w["substances"],
            w["interacts_with"]["source"],
            w["interacts_with"]["order_id"],
        )
        for w in r.json()["safety"]["warnings"]
    ]
    assert found == [
        ("contraindicated", ["clarithromycin", "simvastatin"], "dispensed", str(recent.id)),
        ("major", ["aspirin", "warfarin"], "open_order", str(open_order.id)),
    ]


def test_a_coded_allergy_warns_on_a_product_containing_the_substance(client, db, world):
    combo = _product(db, world, "amoxicillin and clavulanic acid", rx=True)
    url = f"{API}/users/me/allergies"
    r = client.put(
        url,
        json={"allergies": [{"code": "  Amoxicillin ", "reaction": "hives"}]},
        headers=auth(world.patient),
    )
    assert r.status_code == 200, r.text
    mine = [
        {
            "code": "amoxicillin",
            "system": "urn:o2o:substance",
            "display": "Amoxicillin",
            "reaction": "hives",
        }
    ]
    assert r.json()["allergies"] == mine
    assert client.get(url, headers=auth(world.patient)).json()["allergies"] == mine
    assert client.get(url, headers=auth(world.other_patient)).json()["allergies"] == []

    order = _order(db, world, combo)
    r = client.get(f"{API}/orders/{order.id}", headers=auth(world.pharmacist))
    safety = r.json()["safety"]
    assert safety["allergies"] == mine
    (warning,) = safety["warnings"]
    assert (warning["code"], warning["severity"], warning["product_id"]) == (
        "allergy",
        "contraindicated",
        combo[0].id,
    )
    assert "allergic to Amoxicillin (reaction: hives)" in warning["message"]
    # Another store's pharmacist cannot read the order, nor so the patient's allergies.
    r = client.get(f"{API}/orders/{order.id}", headers=auth(world.other_pharmacist))
    assert r.status_code == 404


def test_allergies_are_coded_substances_and_the_patient_s_own(client, db, world):
    _product(db, world, "amoxicillin", rx=True)
    url = f"{API}/users/me/allergies"
    good = {"allergies": [{"code": "amoxicillin"}]}
    assert client.put(url, json=good, headers=auth(world.patient)).status_code == 200
    r = client.put(url, json={"allergies": [{"code": "moonrock"}]}, headers=auth(world.patient))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_substance"
    assert r.json()["error"]["details"] == {"unknown": ["moonrock"]}
    twice = {"allergies": [{"code": "amoxicillin"}, {"code": "AMOXICILLIN"}]}
    r = client.put(url, json=twice, headers=auth(world.patient))
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_allergy"
    # Nothing changed by the refusals.
    assert [
        a["code"] for a in client.get(url, headers=auth(world.patient)).json()["allergies"]
    ] == ["amoxicillin"]
    assert client.put(url, json=good, headers=auth(world.pharmacist)).status_code == 403
    assert client.put(url, json=good).status_code == 401
    # The codes to choose from.
    r = client.get(f"{API}/substances", params={"q": "AMOX"}, headers=auth(world.patient))
    assert "amoxicillin" in [s["code"] for s in r.json()["items"]]


IMPORTS = 4


def test_concurrent_imports_each_replace_the_whole_table(engine, committed):
    """Imports racing on separate connections: each succeeds, and the table is one file whole,
    never a mix of two or a collision."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy.orm import Session

    files = [
        HEADER + "".join(f"drug{n}x{i},drug{n}y{i},minor,file {n}\n" for i in range(200))
        for n in range(IMPORTS)
    ]
    barrier = threading.Barrier(IMPORTS)

    def run(text: str) -> int:
        with Session(engine) as s:
            barrier.wait(timeout=30)
            written = load(s, text).written
            s.commit()
            return written

    with ThreadPoolExecutor(IMPORTS) as pool:
        assert list(pool.map(run, files)) == [200] * IMPORTS
    with Session(engine) as s:
        advice = {r.advice for r in s.scalars(select(DrugInteraction))}
        assert len(advice) == 1 and s.query(DrugInteraction).count() == 200


def test_concurrent_allergy_replacements_leave_one_whole_list(engine, committed):
    """One patient's apps replacing the list at once: each answer is 200, and the list is one of
    them whole."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from main import create_app
    from o2o.users.models import Role
    from tests.factories import make_user

    with Session(engine, expire_on_commit=False) as s:
        patient = make_user(s, role=Role.PATIENT)
        for generic in ("amoxicillin", "aspirin", "ibuprofen", "warfarin"):
            make_product(s, generic_name=generic)
        s.commit()
    lists = [["amoxicillin", "aspirin"], ["ibuprofen"], ["warfarin", "aspirin"], []]
    app = create_app()
    barrier = threading.Barrier(len(lists))

    def put(codes):
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return c.put(
                f"{API}/users/me/allergies",
                json={"allergies": [{"code": code} for code in codes]},
                headers=auth(patient),
            )

    with ThreadPoolExecutor(len(lists)) as pool:
        answers = list(pool.map(put, lists))
    assert [r.status_code for r in answers] == [200] * len(lists), [r.text for r in answers]
    with TestClient(app) as c:
        final = c.get(f"{API}/users/me/allergies", headers=auth(patient)).json()["allergies"]
    assert sorted(a["code"] for a in final) in [sorted(codes) for codes in lists]
