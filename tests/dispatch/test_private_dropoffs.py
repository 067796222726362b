"""Private drop-offs: until a courier claims a job, the board shows its drop-off only as the centre
of a ~200 m grid cell and no address; the exact point and address go to the job's own courier
after the claim; claims and releases are rate-limited per courier (429 with Retry-After)."""

import math
from datetime import timedelta

from dispatch import service
from dispatch.batching import distance_m
from dispatch.models import Job, JobStatus
from o2o import clock
from o2o.config import get_settings
from o2o.geo import snap_to_grid, to_latlon
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth

API = "/api/v1"
HERE = {"lat": factories.offset(300, 0)[0], "lon": factories.offset(300, 0)[1]}
# The farthest any point of a square cell of side 200 m lies from its centre (+ a metre for the
# sphere against the cell's exact shape).
HALF_DIAGONAL_M = 200 * math.sqrt(2) / 2 + 1


def _board(client, headers) -> dict[str, dict]:
    r = client.get(f"{API}/dispatch/jobs", params=HERE, headers=headers)
    assert r.status_code == 200, r.text
    return {item["order_id"]: item for item in r.json()["items"]}


def _exact(db, order) -> tuple[float, float]:
    point = to_latlon(helpers.job_of(db, order).dropoff)
    return point["lat"], point["lon"]


def _shown(item) -> tuple[float, float]:
    return item["dropoff"]["lat"], item["dropoff"]["lon"]


def test_the_board_shows_an_open_jobs_dropoff_as_its_grid_cell_without_the_address(
    db, client, store, courier_headers
):
    first = helpers.make_delivery_order(db, store, dropoff=factories.offset(1500, 800))
    item = _board(client, courier_headers)[str(first.id)]
    exact = _exact(db, first)
    centre = _shown(item)
    assert centre != exact and item["dropoff_exact"] is False
    assert 0 < distance_m(centre, exact) <= HALF_DIAGONAL_M
    assert "address_text" not in item and "Example Rd" not in str(item)

    # Any other drop-off inside that cell (a few tens of metres from its centre, either way) is
    # shown as the very same point: asking about many neighbours averages nothing out.
    neighbours = [
        helpers.make_delivery_order(db, store, dropoff=factories.offset(north, east, origin=centre))
        for north, east in ((40, 40), (-45, 30), (35, -50), (-30, -45))
    ]
    board = _board(client, courier_headers)
    assert {_shown(board[str(o.id)]) for o in neighbours} == {centre}
    assert all(_shown(board[str(o.id)]) != _exact(db, o) for o in neighbours)

    # A drop-off two cells away is shown at another centre, about that far from the first.
    apart = helpers.make_delivery_order(db, store, dropoff=factories.offset(400, 0, origin=centre))
    shown = _shown(_board(client, courier_headers)[str(apart.id)])
    assert 300 < distance_m(shown, centre) < 500
    assert distance_m(shown, _exact(db, apart)) <= HALF_DIAGONAL_M


def test_the_claimed_job_shows_its_courier_the_exact_point_and_address(
    db, client, store, courier_headers
):
    order = helpers.make_delivery_order(db, store, dropoff=factories.offset(1500, 800))
    job_id = _board(client, courier_headers)[str(order.id)]["id"]
    exact = _exact(db, order)

    r = client.post(f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 200, r.text
    for held in (
        r.json(),
        client.get(f"{API}/dispatch/jobs/{job_id}", headers=courier_headers).json(),
        client.get(f"{API}/couriers/me/jobs", headers=courier_headers).json()[0],
    ):
        assert held["dropoff_exact"] is True
        assert _shown(held) == exact
        assert held["address_text"] == "Room 501, 8 Example Rd"


def test_another_courier_never_sees_the_exact_point_of_a_job_they_did_not_claim(
    db, client, store, courier_headers
):
    order = helpers.make_delivery_order(db, store, dropoff=factories.offset(-1200, 900))
    exact = _exact(db, order)
    rival = auth(helpers.make_courier(db, home_store=store, at=factories.offset(300, 0)))
    job_id = _board(client, rival)[str(order.id)]["id"]
    assert _shown(_board(client, rival)[str(order.id)]) != exact

    mine = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert mine.status_code == 200 and _shown(mine.json()) == exact
    # Claimed by someone else: off the rival's board, and reading it is the usual 404.
    assert str(order.id) not in _board(client, rival)
    r = client.get(f"{API}/dispatch/jobs/{job_id}", headers=rival)
    assert r.status_code == 404 and "dropoff" not in r.text
    r = client.post(f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=rival)
    assert r.status_code == 409 and "dropoff" not in r.text

    # Released, the job is open again: approximate for everyone, its former holder included.
    released = client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers)
    assert released.status_code == 200 and released.json()["dropoff_exact"] is False
    assert _shown(released.json()) != exact and "address_text" not in released.json()
    again = _board(client, rival)[str(order.id)]
    assert _shown(again) == _shown(released.json()) != exact


def test_a_trip_shows_exact_drops_only_to_the_courier_who_claimed_it(db, client, store, courier):
    orders = [
        helpers.make_delivery_order(db, store, dropoff=factories.offset(1000 * (i + 1), 0))
        for i in range(3)
    ]
    rival = auth(helpers.make_courier(db, home_store=store, at=factories.offset(300, 0)))
    board = _board(client, rival)
    assert all(_shown(board[str(o.id)]) != _exact(db, o) for o in orders)

    r = client.post(f"{API}/dispatch/trips", json=HERE, headers=auth(courier))
    assert r.status_code == 200, r.text
    drops = {d["order_id"]: d for d in r.json()["drops"]}
    assert len(drops) == 3
    assert all(_shown(drops[str(o.id)]) == _exact(db, o) for o in orders)
    assert all(d["address_text"] and d["dropoff_exact"] for d in drops.values())


def test_a_slot_jobs_opening_time_tells_no_more_than_its_cell(db, store):
    """When a scheduled job enters the board is seen by couriers; it is ridden from the cell."""
    cell = snap_to_grid(*factories.offset(1800, 600), get_settings().dispatch_dropoff_grid_m)
    centre = (cell["lat"], cell["lon"])
    start = clock.now() + timedelta(hours=3)
    opened = []
    # Two drop-offs of one cell, 110 m apart along the way from the store, and one 1 km on.
    for north in (-55, 55, 1000):
        order = helpers.make_delivery_order(
            db, store, dropoff=factories.offset(north, 0, origin=centre), open_job=False
        )
        order.delivery_slot_start, order.delivery_slot_end = start, start + timedelta(hours=1)
        db.flush()
        opened.append(service.open_job_for_order(db, order).opened_at)
    assert clock.now() < opened[0] < start
    assert opened[0] == opened[1]
    assert opened[2] < opened[1]  # farther: it opens earlier


# Rate limits ------------------------------------------------------------------------------------


def _assert_limited(r) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 3600


def test_claims_are_rate_limited_per_courier_and_a_refused_claim_takes_nothing(
    db, client, store, courier, courier_headers, monkeypatch
):
    monkeypatch.setattr(get_settings(), "dispatch_claim_rate_limit", "3/hour")
    # Polling an empty board costs nothing: only claims that take a job count.
    for _ in range(5):
        assert (
            client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers).status_code
            == 204
        )
    order = helpers.make_delivery_order(db, store)
    job_id = str(helpers.job_of(db, order).id)
    claims = [
        lambda: client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers),
        lambda: client.post(
            f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=courier_headers
        ),
        lambda: client.post(f"{API}/dispatch/trips", json=HERE, headers=courier_headers),
    ]
    for claim in claims:  # three claims by three routes, each released again
        r = claim()
        assert r.status_code == 200, r.text
        r = client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers)
        assert r.status_code == 200, r.text

    for claim in claims:
        _assert_limited(claim())
    job = db.get(Job, helpers.job_of(db, order).id, populate_existing=True)
    assert job.status is JobStatus.OPEN and job.courier_id is None

    # Per courier: another courier claims the job at once.
    other = auth(helpers.make_courier(db, home_store=store, at=factories.offset(300, 0)))
    r = client.post(f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=other)
    assert r.status_code == 200 and r.json()["dropoff_exact"] is True


def test_a_claim_refused_for_the_couriers_own_load_does_not_count(
    db, client, store, courier_headers, monkeypatch
):
    monkeypatch.setattr(get_settings(), "dispatch_claim_rate_limit", "2/hour")
    monkeypatch.setattr(get_settings(), "dispatch_max_active_jobs", 1)
    for _ in range(2):
        helpers.make_delivery_order(db, store)
    first = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert first.status_code == 200, first.text
    # Holding the most jobs allowed: each further claim is refused for that, not for the window.
    for _ in range(3):
        r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
        assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_jobs", r.text
    r = client.post(f"{API}/dispatch/jobs/{first.json()['id']}/release", headers=courier_headers)
    assert r.status_code == 200, r.text
    # Only the first claim counted: a second fits the window of two, a third does not.
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/dispatch/jobs/{r.json()['id']}/release", headers=courier_headers)
    _assert_limited(client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers))


def test_releases_are_rate_limited_per_courier(db, client, store, courier_headers, monkeypatch):
    monkeypatch.setattr(get_settings(), "dispatch_release_rate_limit", "2/hour")
    order = helpers.make_delivery_order(db, store)
    job_id = str(helpers.job_of(db, order).id)
    for _ in range(2):
        r = client.post(f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=courier_headers)
        assert r.status_code == 200, r.text
        r = client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers)
        assert r.status_code == 200, r.text
    r = client.post(f"{API}/dispatch/jobs/{job_id}/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 200, r.text

    _assert_limited(client.post(f"{API}/dispatch/jobs/{job_id}/release", headers=courier_headers))
    # Refused, the job stays the courier's: they pick it up (or the stale-claim sweep frees it).
    job = db.get(Job, helpers.job_of(db, order).id, populate_existing=True)
    assert job.status is JobStatus.CLAIMED
    r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=courier_headers)
    assert r.status_code == 200, r.text
