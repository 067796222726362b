"""Identity-pepper rotation: every stored hash names its pepper version; after a rotation the
earlier version still matches while it is configured, new hashes (and rows whose number is given
again) carry the new version, and rows on a dropped version can no longer be matched."""

import uuid

from pydantic import SecretStr
from typer.testing import CliRunner

from o2o import clock
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.users.models import Role
from prescriptions import identity, workflow
from prescriptions.identity_cli import app as identities_cli
from prescriptions.models import Prescription
from prescriptions.workflow import PrescriptionStatus
from tests.factories import make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import make_rx_order, request_rx

NUMBER = "110101199001011234"
OTHER_NUMBER = "310101198001015678"
NEW_PEPPER = "n" * 20 + "-identity-pepper-version-2"


def _rotate(monkeypatch, *, keep_previous: bool) -> str:
    """Rotate to version 2 with a new pepper, keeping version 1 as previous or dropping it."""
    settings = get_settings()
    old = settings.key("identity_pepper")
    monkeypatch.setattr(settings, "identity_pepper", SecretStr(NEW_PEPPER))
    monkeypatch.setattr(settings, "identity_pepper_version", 2)
    monkeypatch.setattr(
        settings, "identity_pepper_previous", SecretStr(f"1:{old}") if keep_previous else None
    )
    return old


def _stored(db, pid: str) -> Prescription:
    p = db.get(Prescription, uuid.UUID(pid))
    db.refresh(p)
    return p


def test_a_version_1_hash_still_matches_after_rotating_with_version_1_as_previous(
    client, db, world, monkeypatch
):
    pid = request_rx(client, world.patient, world.order(db), id_number=NUMBER)["id"]
    assert _stored(db, pid).id_number_pepper_version == 1

    _rotate(monkeypatch, keep_previous=True)
    assert [p.id for p in identity.find_prescriptions(db, NUMBER)] == [uuid.UUID(pid)]
    # Spaces and dashes are the same document.
    assert identity.find_prescriptions(db, "1101 0119-9001 0112 34")[0].id == uuid.UUID(pid)
    assert identity.find_prescriptions(db, OTHER_NUMBER) == []


def test_new_hashes_carry_the_new_version_and_a_number_given_again_moves_its_rows(
    client, db, world, monkeypatch
):
    first = request_rx(client, world.patient, world.order(db), id_number=NUMBER)["id"]
    other = request_rx(
        client,
        world.other_patient,
        world.order(db, patient=world.other_patient),
        id_number=OTHER_NUMBER,
    )["id"]
    old_hash = _stored(db, first).id_number_hmac

    _rotate(monkeypatch, keep_previous=True)
    second = request_rx(client, world.patient, world.order(db), id_number=NUMBER)["id"]
    new_row = _stored(db, second)
    assert new_row.id_number_pepper_version == 2
    assert new_row.id_number_hmac != old_hash
    # The number was in hand again: the earlier row holding it moved to version 2 as well.
    moved = _stored(db, first)
    assert (moved.id_number_pepper_version, moved.id_number_hmac) == (2, new_row.id_number_hmac)
    # A row of another number stays on version 1, still matched through the previous pepper.
    assert _stored(db, other).id_number_pepper_version == 1
    assert [p.id for p in identity.find_prescriptions(db, OTHER_NUMBER)] == [uuid.UUID(other)]
    found = {p.id for p in identity.find_prescriptions(db, NUMBER)}
    assert found == {uuid.UUID(first), uuid.UUID(second)}


def test_dropping_the_previous_pepper_leaves_its_rows_unmatched(client, db, world, monkeypatch):
    pid = request_rx(client, world.patient, world.order(db), id_number=NUMBER)["id"]
    _rotate(monkeypatch, keep_previous=False)
    # The documented consequence: the number cannot be recovered from the hash, so a row left on
    # a dropped version matches nothing any more (its legal name and masked number remain).
    assert identity.find_prescriptions(db, NUMBER) == []
    assert _stored(db, pid).id_number_masked == "1101**********1234"
    counts = {c.version: c for c in identity.version_counts(db)}
    assert counts[1].configured is False and counts[1].rows >= 1


def _committed_request(number: str) -> uuid.UUID:
    """A closed (cancelled) request holding the number's hash, committed for the command line's
    own session; closed, so no doctor's queue in later tests ever shows it."""
    version, hashed = identity.hash_id_number(number)
    with session_scope() as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        patient = make_user(s, role=Role.PATIENT)
        order = make_rx_order(s, patient, store, [(product, 1, make_lot(s, store, product))])
        p = Prescription(
            order_id=order.id,
            patient_id=patient.id,
            status=PrescriptionStatus.CANCELLED,
            legal_name="Li Wei",
            id_number_hmac=hashed,
            id_number_pepper_version=version,
            id_number_masked=workflow.mask_id_number(number),
            symptoms="Sore throat",
            allergies="none",
            current_medication="none",
            requested_at=clock.now(),
            refills=0,
            fills_used=0,
        )
        s.add(p)
        s.flush()
        return p.id


def test_the_command_line_reports_versions_and_finds_across_them(committed, monkeypatch):
    number = f"4401011970{uuid.uuid4().int % 10**8:08d}"
    pid = _committed_request(number)
    _rotate(monkeypatch, keep_previous=True)
    runner = CliRunner()

    found = runner.invoke(identities_cli, ["find", "--number", number])
    assert found.exit_code == 0, found.output
    assert str(pid) in found.output and "1 prescription(s)" in found.output

    report = runner.invoke(identities_cli, ["versions"], terminal_width=200)
    assert report.exit_code == 0, report.output
    assert "previous (still matched)" in report.output
    assert "current version 2; configured [1, 2]" in report.output

    monkeypatch.setattr(get_settings(), "identity_pepper_previous", None)
    report = runner.invoke(identities_cli, ["versions"], terminal_width=200)
    assert "NOT CONFIGURED" in report.output
    found = runner.invoke(identities_cli, ["find", "--number", number])
    assert str(pid) not in found.output and "0 prescription(s)" in found.output
