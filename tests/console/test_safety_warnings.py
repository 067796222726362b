"""The console's review page shows the pharmacist the patient's recorded allergies and the
allergy and interaction warnings for the order (the pair below is test data, not a clinical
statement)."""

import io

import pytest

from o2o.users import service as users_service
from prescriptions import interaction_import, safety, substances
from tests.console.conftest import console_login
from tests.console.world import build_world


@pytest.fixture
def world(db):
    return build_world(db)


def test_review_page_shows_recorded_allergies_and_warnings(client, db, world):
    patient = users_service.get_by_email(db, world.patient)
    safety.set_allergies(db, patient.id, [substances.Allergy("amoxicillin", "Amoxicillin", "rash")])
    # The patient's ready pickup holds ibuprofen; the order under review holds amoxicillin.
    interaction_import.import_interactions_csv(
        db,
        io.BytesIO(
            b"substance_a,substance_b,severity,advice\n"
            b"amoxicillin,ibuprofen,moderate,Test data: ask the prescriber.\n"
        ),
    )
    db.commit()
    console_login(client, world.pharmacist_a)
    base = f"/console/stores/{world.store_a}/prescriptions"
    html = client.get(f"{base}/{world.rx_approve}").text
    assert 'id="coded-allergies">Amoxicillin (rash)</dd>' in html
    assert 'data-code="allergy" data-severity="contraindicated"' in html
    assert "The patient is allergic to Amoxicillin (reaction: rash)" in html
    assert 'data-code="interaction" data-severity="moderate"' in html
    assert "Test data: ask the prescriber." in html
    queue = client.get(base).text
    assert 'badge--bad badge--wrap">Allergy</span>' in queue
    assert 'badge--bad badge--wrap">Interaction</span>' in queue


def test_review_page_without_records_says_none_recorded(client, db, world):
    console_login(client, world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}").text
    assert 'id="coded-allergies">none recorded</dd>' in html
    assert "safety-warning" not in html
