"""Console pages through the TestClient: what each role sees, and what it may not see."""

import re
import uuid
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from o2o.order_flow import checkout, store_actions
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import Order, OrderStatus
from o2o.users import service as users_service
from o2o.users.models import User
from prescriptions import doctor_keys, refills
from prescriptions.models import DoctorKey, Prescription
from prescriptions.workflow import PrescriptionStatus
from stores import slots
from stores.models import Lot, Product, Store
from tests import factories
from tests.console.conftest import console_login
from tests.console.helpers import csrf_from
from tests.console.world import STORE_A, build_world, place_order


@pytest.fixture
def world(db):
    return build_world(db)


@pytest.fixture
def as_user(client):
    """Sign the client in as the user with this email; return the CSRF token."""

    def _as(email: str) -> str:
        client.cookies.clear()
        assert console_login(client, email).status_code == 303
        return csrf_from(client.get("/console/login").text)

    return _as


def _status(db, pid: str) -> PrescriptionStatus:
    db.expire_all()
    return db.get(Prescription, uuid.UUID(pid)).status


def _order_of(db, pid: str) -> Order:
    db.expire_all()
    return db.get(Order, db.get(Prescription, uuid.UUID(pid)).order_id)


# --- prescriptions ---------------------------------------------------------------------------


def test_queue_lists_the_store_s_issued_prescriptions_with_their_wait(client, world, as_user):
    as_user(world.pharmacist_a)
    page = client.get(f"/console/stores/{world.store_a}/prescriptions")
    assert page.status_code == 200
    links = re.findall(r"/prescriptions/([0-9a-f-]{36})\"", page.text)
    assert sorted(links) == sorted([world.rx_approve, world.rx_reject])
    assert world.rx_requested not in page.text  # still with the doctors
    assert "Mei Chen" in page.text and "2 × Amoxicillin" in page.text
    assert "0 min" in page.text


def test_detail_shows_request_attachment_prescription_signature_and_order(client, world, as_user):
    as_user(world.pharmacist_a)
    url = f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}"
    page = client.get(url)
    assert page.status_code == 200
    html = page.text
    assert "Signature valid" in html
    assert "Sore throat and fever" in html and "1101" in html and "1234" in html
    assert "3 times a day" in html and "Dr. Li Wei" in html
    assert "Valid until" in html
    assert "Covered" in html  # the order's 2 capsules are within the prescribed 2
    assert f'<img src="{url}/attachment"' in html
    attachment = client.get(f"{url}/attachment")
    assert attachment.status_code == 200
    assert attachment.headers["content-type"] == "image/png"
    assert attachment.content.startswith(b"\x89PNG")
    assert "sandbox" in attachment.headers["content-security-policy"]
    # A request without attachment has none to serve.
    other = client.get(
        f"/console/stores/{world.store_a}/prescriptions/{world.rx_reject}/attachment"
    )
    assert other.status_code == 404


def test_a_refill_is_marked_with_the_fills_counted_on_the_first(client, db, world, as_user):
    token = as_user(world.pharmacist_a)
    base = f"/console/stores/{world.store_a}/prescriptions"
    html = client.get(f"{base}/{world.rx_approve}").text
    assert "1 allowed · filled 0 of 2 times" in html
    client.post(
        f"{base}/{world.rx_approve}/review", data={"csrf_token": token, "decision": "approve"}
    )
    # The first fill is handed over; then the patient asks for the refill.
    first_order = _order_of(db, world.rx_approve)
    staff_id = users_service.get_by_email(db, world.pharmacist_a).id
    store_actions.prepare(db, first_order, actor_id=staff_id)
    store_actions.mark_ready(db, first_order, actor_id=staff_id)
    store_actions.handover(db, first_order, first_order.pickup_code, actor_id=staff_id)
    patient = users_service.get_by_email(db, world.patient)
    order = place_order(db, patient, world.store_a, [(world.extra["amoxicillin"], 2)])
    refill = refills.request_refill(db, patient, uuid.UUID(world.rx_approve), order.id)
    db.flush()

    queue = client.get(base).text
    assert str(refill.id) in queue
    html = client.get(f"{base}/{refill.id}").text
    assert "this order is a refill" in html
    assert "1 allowed · filled 1 of 2 times" in html
    assert "Signature valid" in html


def test_a_revoked_key_is_shown_and_approval_is_not_offered(client, db, world, as_user):
    p = db.get(Prescription, uuid.UUID(world.rx_approve))
    key = db.get(DoctorKey, p.doctor_key_id)
    admin = users_service.get_by_email(db, world.doctor)  # any user id works as the revoker
    doctor_keys.revoke_key(db, admin, key.id)
    db.flush()
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}").text
    assert "Key revoked" in html
    assert re.search(r'value="approve"[^>]*disabled', html)
    # Posting anyway is refused by the prescriptions service, and nothing changes.
    token = csrf_from(html)
    response = client.post(
        f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}/review",
        data={"csrf_token": token, "decision": "approve"},
    )
    assert response.status_code == 409
    assert "revoked" in response.text
    assert _status(db, world.rx_approve) is PrescriptionStatus.ISSUED


def test_approve_releases_and_reject_needs_a_reason(client, db, world, as_user):
    token = as_user(world.pharmacist_a)
    base = f"/console/stores/{world.store_a}/prescriptions"
    response = client.post(
        f"{base}/{world.rx_approve}/review",
        data={"csrf_token": token, "decision": "approve"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"].endswith("?done=approved")
    assert _status(db, world.rx_approve) is PrescriptionStatus.APPROVED
    assert _order_of(db, world.rx_approve).status is OrderStatus.RELEASED

    refused = client.post(
        f"{base}/{world.rx_reject}/review",
        data={"csrf_token": token, "decision": "reject", "reason": "  "},
    )
    assert refused.status_code == 422
    assert "Give a reason to reject" in refused.text
    assert _status(db, world.rx_reject) is PrescriptionStatus.ISSUED

    rejected = client.post(
        f"{base}/{world.rx_reject}/review",
        data={"csrf_token": token, "decision": "reject", "reason": "Dose too high for age"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303
    assert _status(db, world.rx_reject) is PrescriptionStatus.REJECTED
    order = _order_of(db, world.rx_reject)
    assert order.status is OrderStatus.CANCELLED and "Dose too high" in order.cancel_reason
    # Reviewing twice is refused and shown on the page.
    again = client.post(
        f"{base}/{world.rx_reject}/review",
        data={"csrf_token": token, "decision": "approve"},
    )
    assert again.status_code == 409


def test_another_store_s_pharmacist_gets_404_everywhere(client, db, world, as_user):
    token = as_user(world.pharmacist_b)
    a, b = world.store_a, world.store_b
    for path in (
        f"/console/stores/{a}/prescriptions",
        f"/console/stores/{a}/prescriptions/{world.rx_approve}",
        f"/console/stores/{a}/prescriptions/{world.rx_approve}/attachment",
        f"/console/stores/{a}/orders",
        f"/console/stores/{a}/orders/board",
        f"/console/stores/{a}/inventory",
        f"/console/stores/{a}/sla",
        f"/console/stores/{a}/sla/map.svg",
        # Through their own store's URL the other store's prescription does not exist either.
        f"/console/stores/{b}/prescriptions/{world.rx_approve}",
        f"/console/stores/{b}/prescriptions/{world.rx_approve}/attachment",
        f"/console/stores/{b}/prescriptions/not-a-uuid",
        "/console/stores/999999/orders",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text
    for path, data in (
        (f"/console/stores/{a}/prescriptions/{world.rx_approve}/review", {"decision": "approve"}),
        (f"/console/stores/{b}/prescriptions/{world.rx_approve}/review", {"decision": "approve"}),
        (f"/console/stores/{a}/orders/{world.pickup_order}/handover", {"pickup_code": "000000"}),
        (f"/console/stores/{b}/orders/{world.pickup_order}/prepare", {}),
    ):
        response = client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 404, path
    assert _status(db, world.rx_approve) is PrescriptionStatus.ISSUED
    db.expire_all()
    pickup = db.get(Order, uuid.UUID(world.pickup_order))
    assert pickup.status is OrderStatus.READY and pickup.pickup_code_failures == 0


def test_doctors_and_pharmacists_stay_on_their_own_pages(client, world, as_user):
    as_user(world.doctor)
    assert client.get(f"/console/stores/{world.store_a}/orders").status_code == 403
    assert client.get("/console/", follow_redirects=False).headers["location"] == "/console/doctor"
    as_user(world.pharmacist_a)
    assert client.get("/console/doctor").status_code == 403


# --- orders board ----------------------------------------------------------------------------


def test_board_highlights_the_delivery_the_sla_monitor_flagged(client, world, as_user):
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/orders").text
    cards = dict(re.findall(r'<article class="([^"]*)" id="order-([0-9a-f-]{36})"', html))
    cards = {
        oid: cls
        for cls, oid in re.findall(r'<article class="([^"]*)" id="order-([0-9a-f-]{36})"', html)
    }
    assert "order--at-risk" in cards[world.at_risk_order]
    others = [cls for oid, cls in cards.items() if oid != world.at_risk_order]
    assert others and not any("order--at-risk" in cls for cls in others)
    assert "1 delivery at risk" in html  # plural forms from the catalogue
    assert re.search(r'data-deadline="[^"]+"', html)
    # The periodic refresh returns the board alone.
    fragment = client.get(f"/console/stores/{world.store_a}/orders/board")
    assert fragment.text.lstrip().startswith('<div id="board"')


def test_prepare_ready_and_handover_with_wrong_then_right_code(client, db, world, as_user):
    token = as_user(world.pharmacist_a)
    base = f"/console/stores/{world.store_a}/orders"
    # An order released by approving its prescription moves through prepare and ready.
    client.post(
        f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}/review",
        data={"csrf_token": token, "decision": "approve"},
    )
    order_id = str(_order_of(db, world.rx_approve).id)
    assert (
        client.post(
            f"{base}/{order_id}/prepare", data={"csrf_token": token}, follow_redirects=False
        ).status_code
        == 303
    )
    twice = client.post(f"{base}/{order_id}/prepare", data={"csrf_token": token})
    assert twice.status_code == 409 and "cannot become" in twice.text
    assert (
        client.post(
            f"{base}/{order_id}/ready", data={"csrf_token": token}, follow_redirects=False
        ).status_code
        == 303
    )
    db.expire_all()
    assert db.get(Order, uuid.UUID(order_id)).status is OrderStatus.READY

    wrong = "000000" if world.pickup_code != "000000" else "111111"
    response = client.post(
        f"{base}/{world.pickup_order}/handover", data={"csrf_token": token, "pickup_code": wrong}
    )
    assert response.status_code == 422
    assert "The pickup code is wrong; 4 tries left." in response.text
    db.expire_all()
    pickup = db.get(Order, uuid.UUID(world.pickup_order))
    assert pickup.status is OrderStatus.READY and pickup.pickup_code_failures == 1
    # An empty code is not a guess.
    empty = client.post(f"{base}/{world.pickup_order}/handover", data={"csrf_token": token})
    assert empty.status_code == 422 and "Enter the patient&#39;s pickup code" in empty.text
    right = client.post(
        f"{base}/{world.pickup_order}/handover",
        data={"csrf_token": token, "pickup_code": world.pickup_code},
        follow_redirects=False,
    )
    assert right.status_code == 303 and "done=handed_over" in right.headers["location"]
    db.expire_all()
    assert db.get(Order, uuid.UUID(world.pickup_order)).status is OrderStatus.COMPLETED


# --- inventory -------------------------------------------------------------------------------


def test_inventory_shows_low_stock_expiring_lots_and_search(client, world, as_user):
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/inventory").text
    low = html.split('id="low-title"')[1].split('id="expiring-title"')[0]
    # Vitamin C: 4 on hand, 1 reserved by a delivery order -> 3 sellable.
    row = re.search(r"Vitamin C 1 g.*?</tr>", low, re.S).group(0)
    assert re.findall(r'class="num">(?:<strong>)?(\d+)', row)[:3] == ["3", "4", "1"]
    assert "Ibuprofen" not in low
    expiring = html.split('id="expiring-title"')[1]
    assert "Ibuprofen 200 mg" in expiring and "Not sold online" in expiring
    found = client.get(f"/console/stores/{world.store_a}/inventory", params={"q": "amoxi"}).text
    results = found.split('id="search-title"')[1].split('id="low-title"')[0]
    assert "Amoxicillin 500 mg" in results
    # 30 on hand, 4 reserved by the three prescription orders.
    row = re.search(r"Amoxicillin 500 mg.*?</tr>", results, re.S).group(0)
    assert re.findall(r'class="num">(?:<strong>)?(\d+)', row)[:3] == ["26", "30", "4"]
    none = client.get(f"/console/stores/{world.store_a}/inventory", params={"q": "zzzz"}).text
    assert "No product matches" in none


# --- SLA -------------------------------------------------------------------------------------


def test_sla_page_report_chart_and_map(client, world, as_user):
    import xml.etree.ElementTree as ET

    from tests.console.world import HISTORY

    ns = "{http://www.w3.org/2000/svg}"
    delivered = sum(len(d) for d in HISTORY.values())
    late = sum(1 for d in HISTORY.values() for minutes in d if minutes > 120)
    as_user(world.pharmacist_a)
    page = client.get(f"/console/stores/{world.store_a}/sla")
    assert page.status_code == 200
    stats = dict(
        re.findall(r'class="label">([^<]+)</span><span class="value[^"]*">([^<]+)<', page.text)
    )
    assert stats["Delivered"] == str(delivered) and stats["On time"] == str(delivered - late)
    assert stats["On-time rate"] == f"{(delivered - late) / delivered * 100:.1f}%"
    assert stats["Compensation"] == f"CN¥{late * 5}.00"  # the delivery fee is waived
    assert f'id="breaches-title">Breaches <span class="count">{late}</span>' in page.text

    chart = client.get(f"/console/stores/{world.store_a}/sla/chart.svg")
    assert chart.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(chart.text)
    # Fourteen days by default: a bar or a "no deliveries" mark for each, and the bars add up.
    bars = [r for r in root.findall(f".//{ns}rect") if "bar" in (r.get("class") or "")]
    gaps = root.findall(f".//{ns}text[@class='no-data']")
    assert len(bars) + len(gaps) == 14
    counts = [re.search(r"\((\d+) of (\d+)\)", b.find(f"{ns}title").text).groups() for b in bars]
    assert sum(int(total) for _, total in counts) == delivered
    assert sum(int(on_time) for on_time, _ in counts) == delivered - late
    assert any("bar--below" in b.get("class") for b in bars)

    map_svg = ET.fromstring(client.get(f"/console/stores/{world.store_a}/sla/map.svg").text)
    assert map_svg.find(f".//{ns}path[@class='zone']") is not None
    assert map_svg.find(f".//{ns}rect[@class='store']") is not None
    # Today's two deliveries (the history is from earlier days), not yet delivered.
    dropoffs = map_svg.findall(f".//{ns}circle")
    assert 1 <= len(dropoffs) <= 2
    assert all("dropoff--open" in c.get("class") for c in dropoffs)
    bad = client.get(
        f"/console/stores/{world.store_a}/sla", params={"from": "2026-01-10", "to": "2026-01-01"}
    )
    assert bad.status_code == 422
    too_long = client.get(
        f"/console/stores/{world.store_a}/sla", params={"from": "2025-01-01", "to": "2026-01-01"}
    )
    assert too_long.status_code == 422


# --- doctor ----------------------------------------------------------------------------------


def test_doctor_claims_prepares_and_issues_with_a_pasted_signature(client, db, world, as_user):
    from cryptography.hazmat.primitives import serialization

    from prescriptions import signing

    token = as_user(world.doctor)
    queue = client.get("/console/doctor").text
    assert "Sore throat" in queue and world.rx_requested in queue
    claimed = client.post(
        f"/console/doctor/prescriptions/{world.rx_requested}/claim",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert claimed.status_code == 303
    page = client.get(claimed.headers["location"])
    assert "Issue a prescription" in page.text and "Mei Chen" in page.text

    incomplete = client.post(
        f"/console/doctor/prescriptions/{world.rx_requested}/payload",
        data={
            "csrf_token": token,
            "item_0_product_id": str(world.extra["amoxicillin"]),
            "item_0_quantity": "1",
        },
    )
    assert incomplete.status_code == 422 and "Medicine 1, dose" in incomplete.text

    signing_page = client.post(
        f"/console/doctor/prescriptions/{world.rx_requested}/payload",
        data={
            "csrf_token": token,
            "item_0_product_id": str(world.extra["amoxicillin"]),
            "item_0_quantity": "1",
            "item_0_dose": "1 capsule",
            "item_0_frequency": "twice a day",
            "item_0_duration_days": "5",
            "refills": "0",
            "valid_hours": "24",
        },
    )
    assert signing_page.status_code == 200
    payload = re.search(r'name="payload" value="([^"]+)"', signing_page.text).group(1)
    assert "python -m o2o doctor sign" in signing_page.text
    key = serialization.load_pem_private_key(world.doctor_key_pem, password=None)
    forged = client.post(
        f"/console/doctor/prescriptions/{world.rx_requested}/issue",
        data={"csrf_token": token, "payload": payload, "signature": signing.b64encode(b"x" * 64)},
    )
    assert forged.status_code == 422 and "does not verify" in forged.text
    assert _status(db, world.rx_requested) is PrescriptionStatus.CLAIMED
    signature = signing.b64encode(key.sign(signing.b64decode(payload)))
    issued = client.post(
        f"/console/doctor/prescriptions/{world.rx_requested}/issue",
        data={"csrf_token": token, "payload": payload, "signature": signature},
        follow_redirects=False,
    )
    assert issued.status_code == 303
    assert _status(db, world.rx_requested) is PrescriptionStatus.ISSUED


def test_a_doctor_cannot_open_another_doctor_s_request(client, db, world, as_user):
    from o2o.users.models import Role
    from tests.factories import make_user

    other = make_user(db, role=Role.DOCTOR)
    token = as_user(other.email)
    # rx_approve was claimed and issued by the world's doctor.
    assert client.get(f"/console/doctor/prescriptions/{world.rx_approve}").status_code == 404
    response = client.post(
        f"/console/doctor/prescriptions/{world.rx_approve}/decline",
        data={"csrf_token": token, "reason": "not mine"},
    )
    assert response.status_code == 404
    assert _status(db, world.rx_approve) is PrescriptionStatus.ISSUED


def test_admin_finds_any_store_and_sees_its_board(client, db, world, as_user):
    from o2o.users.models import Role
    from tests.factories import make_user

    admin = make_user(db, role=Role.ADMIN)
    as_user(admin.email)
    listing = client.get("/console/stores", params={"q": "jing'an"})
    assert "Jing&#39;an Pharmacy" in listing.text and "Chaoyang" not in listing.text
    board = client.get(f"/console/stores/{world.store_a}/orders")
    assert board.status_code == 200 and "order--at-risk" in board.text


# --- Payments --------------------------------------------------------------------------------


def test_payments_page_shows_takings_refunds_and_what_to_collect(client, db, world, as_user):
    from o2o.order_flow import checkout
    from o2o.order_flow.schemas import OrderIn
    from o2o.orders import lifecycle

    patient = users_service.get_by_email(db, world.patient)
    body = {
        "items": [{"product_id": world.extra["ibuprofen"], "quantity": 2}],
        "location": {"lat": 31.2314, "lon": 121.4737},
        "fulfillment": "pickup",
        "store_id": world.store_a,
        "payment_method": "at_store",
    }
    counter = checkout.place_order(db, patient, OrderIn.model_validate(body))
    online = place_order(db, patient, world.store_a, [(world.extra["ibuprofen"], 1)])
    store_actions.cancel_order(
        db, lifecycle.lock_order(db, online.id), reason="Changed my mind", actor_id=patient.id
    )
    db.flush()
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/payments").text
    collect = html.split('id="collect-title"')[1].split('id="takings-title"')[0]
    assert str(counter.id)[:8] in collect and f"CN¥{counter.total_minor / 100:.2f}" in collect
    refunds = html.split('id="refunds-title"')[1]
    assert str(online.id)[:8] in refunds and "order cancelled" in refunds
    takings = html.split('id="takings-title"')[1].split('id="refunds-title"')[0]
    online_minor = re.search(r'data-figure="online" data-minor="(\d+)"', takings).group(1)
    assert int(online_minor) >= online.total_minor
    assert client.get(f"/console/stores/{world.store_b}/payments").status_code in (403, 404)


def test_board_shows_scheduled_deliveries_by_slot(client, db, world, as_user):
    store = db.get(Store, world.store_a)
    product_id = db.scalar(
        select(Lot.product_id)
        .join(Product, Product.id == Lot.product_id)
        .where(Lot.store_id == store.id, Product.rx_only.is_(False))
        .limit(1)
    )
    patient = db.scalar(select(User).where(User.email == world.patient))
    slot = slots.open_slots(db, store)[2]
    body = {
        "items": [{"product_id": product_id, "quantity": 1}],
        "location": {"lat": STORE_A[0] + 0.001, "lon": STORE_A[1]},
        "fulfillment": "delivery",
        "store_id": store.id,
        "delivery_address": {
            "location": {"lat": STORE_A[0] + 0.004, "lon": STORE_A[1]},
            "text": "Room 9, 1 Slot Road",
        },
        "delivery_slot": {"start": slot.start.isoformat(), "end": slot.end.isoformat()},
    }
    order = checkout.place_order(db, patient, OrderIn.model_validate(body))
    factories.pay(db, order)
    db.flush()
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/orders").text
    assert "Scheduled deliveries by slot" in html
    section = html[html.index("Scheduled deliveries by slot") :]
    assert str(order.id)[:8] in section[: section.index("</section>")]
    local = slot.start.astimezone(ZoneInfo(store.timezone)).strftime("%H:%M")
    assert f"Slot {local}" in html
    db.refresh(order)
    advised = order.prepare_from.astimezone(ZoneInfo(store.timezone)).strftime("%H:%M")
    assert f"Start preparing at {advised}, in time for its delivery slot." in html


def test_board_lists_substitutions_waiting_for_the_patient(client, db, world, as_user):
    from o2o.order_flow import substitutions

    store = db.get(Store, world.store_a)
    patient = db.scalar(select(User).where(User.email == world.patient))
    pharmacist = db.scalar(select(User).where(User.email == world.pharmacist_a))
    generic = f"boardfenac {uuid.uuid4().hex[:6]}"
    asked = factories.make_product(db, name="Asked brand", generic_name=generic)
    given = factories.make_product(db, name="Given brand", generic_name=generic)
    lot = factories.make_lot(db, store, asked, on_hand=5)
    factories.make_lot(db, store, given, on_hand=5)
    order = factories.make_order(db, patient, store, [(lot, 1)])
    sub = substitutions.propose(
        db, pharmacist, order.id, product_id=asked.id, to_product_id=given.id, reason="formulary"
    )
    assert sub.status == "pending"
    as_user(world.pharmacist_a)
    html = client.get(f"/console/stores/{world.store_a}/orders").text
    section = html[html.index("Waiting for the patient: substitutions") :]
    section = section[: section.index("</section>")]
    assert str(order.id)[:8] in section
    assert "1 × Asked brand → 1 × Given brand (formulary" in section
