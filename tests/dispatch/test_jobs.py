"""The job pool through the API: opening, listing, claiming, the courier's area and radius."""

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from dispatch import actions, couriers, pool, service
from dispatch.batching import distance_m
from dispatch.models import Courier, Job, JobStatus
from dispatch.schemas import CourierLocationOut
from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict
from o2o.geo import to_latlon
from o2o.order_flow import store_actions
from o2o.orders import lifecycle
from o2o.orders.models import OrderStatus
from o2o.users.models import Role
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_store

API = "/api/v1"
HERE = {"lat": factories.offset(300, 0)[0], "lon": factories.offset(300, 0)[1]}


def _params(point=HERE, **extra):
    return {"lat": point["lat"], "lon": point["lon"], **extra}


def test_a_ready_delivery_opens_a_job_with_store_dropoff_deadline_and_priority(db, store):
    order = helpers.make_delivery_order(db, store, dropoff=factories.offset(1000, 1000))
    job = helpers.job_of(db, order)
    assert job.status is JobStatus.OPEN
    assert job.store_id == store.id
    assert job.deadline == order.sla_deadline
    assert job.priority == 0 and job.attempt == 1
    # Opening again (a retried call) keeps the one live job.
    assert service.open_job_for_order(db, order).id == job.id
    assert db.scalar(select(func.count()).select_from(Job).where(Job.order_id == order.id)) == 1


def test_listing_ranks_by_deadline_bucket_then_distance_and_shows_the_api_shape(
    db, client, store, courier_headers
):
    now = clock.now()
    far_store = make_store(
        db, at=factories.offset(3000, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )
    courier_area = factories.square_zone(factories.SHANGHAI, 6000)
    courier = helpers.make_courier(db, area=courier_area, at=factories.offset(300, 0))
    # Same deadline bucket: the nearer store first. An earlier bucket beats distance.
    near = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=20))
    far = helpers.make_delivery_order(db, far_store, released_at=now - timedelta(minutes=20))
    urgent_far = helpers.make_delivery_order(db, far_store, released_at=now - timedelta(minutes=80))
    for order in (far, urgent_far):  # open long enough for the ring to reach 3 km
        helpers.job_of(db, order).opened_at = now - timedelta(minutes=5)
    db.flush()

    r = client.get(f"{API}/dispatch/jobs", params=_params(), headers=auth(courier))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [item["order_id"] for item in body["items"]] == [
        str(urgent_far.id),
        str(near.id),
        str(far.id),
    ]
    first = body["items"][1]
    assert set(first) >= {
        "id",
        "order_id",
        "store",
        "dropoff",
        "deadline",
        "priority",
        "distance_m",
    }
    assert first["store"]["id"] == store.id and first["store"]["name"] == store.name
    assert abs(first["store"]["location"]["lat"] - factories.SHANGHAI[0]) < 1e-9
    assert 290 < first["distance_m"] < 310
    # Before a claim the drop-off is only its ~200 m grid cell's centre, and no address.
    assert set(first["dropoff"]) == {"lat", "lon"} and first["dropoff_exact"] is False
    exact = to_latlon(helpers.job_of(db, near).dropoff)
    shown = (first["dropoff"]["lat"], first["dropoff"]["lon"])
    assert shown != (exact["lat"], exact["lon"])
    assert distance_m(shown, (exact["lat"], exact["lon"])) <= 142
    assert body["next_cursor"] is None
    assert "address_text" not in first  # only the holder sees the address


def test_listing_pages_with_a_cursor_without_repeats(db, client, store, courier_headers):
    orders = [helpers.make_delivery_order(db, store) for _ in range(5)]
    seen, cursor = [], None
    for _ in range(5):
        params = _params(limit=2) | ({"cursor": cursor} if cursor else {})
        r = client.get(f"{API}/dispatch/jobs", params=params, headers=courier_headers)
        assert r.status_code == 200, r.text
        seen += [item["order_id"] for item in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(o.id) for o in orders)
    bad = client.get(
        f"{API}/dispatch/jobs", params=_params(cursor="not-a-cursor"), headers=courier_headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def test_jobs_outside_the_area_are_not_listed_and_cannot_be_claimed(
    db, client, store, courier_headers
):
    elsewhere = make_store(
        db, at=factories.offset(1000, 1000), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )  # not the home store
    theirs = helpers.make_delivery_order(db, elsewhere)
    mine = helpers.make_delivery_order(db, store)

    r = client.get(f"{API}/dispatch/jobs", params=_params(), headers=courier_headers)
    assert [i["order_id"] for i in r.json()["items"]] == [str(mine.id)]

    job = helpers.job_of(db, theirs)
    r = client.post(f"{API}/dispatch/jobs/{job.id}/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"
    db.refresh(job)
    assert job.status is JobStatus.OPEN and job.courier_id is None


def test_a_service_area_courier_is_refused_stores_outside_the_area(db, client):
    """Even escalated (wide radius) and 1.1 km away: a store outside the area is not theirs."""
    area = factories.square_zone(factories.SHANGHAI, 1500)
    inside = make_store(db, at=factories.offset(500, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M)
    outside = make_store(db, at=factories.offset(0, 2500), zone_half_side_m=helpers.DELIVERY_ZONE_M)
    courier = helpers.make_courier(db, area=area, at=factories.offset(0, 1400))
    far_job = helpers.job_of(db, helpers.make_delivery_order(db, outside))
    far_job.priority = 2
    db.flush()
    near_job = helpers.job_of(db, helpers.make_delivery_order(db, inside))
    by_outside = {"lat": factories.offset(0, 1400)[0], "lon": factories.offset(0, 1400)[1]}

    r = client.get(f"{API}/dispatch/jobs", params=_params(by_outside), headers=auth(courier))
    assert [i["id"] for i in r.json()["items"]] == [str(near_job.id)]
    r = client.post(
        f"{API}/dispatch/jobs/{far_job.id}/claim", json=by_outside, headers=auth(courier)
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    r = client.post(f"{API}/dispatch/claim", json=by_outside, headers=auth(courier))
    assert r.status_code == 200 and r.json()["id"] == str(near_job.id)
    r = client.post(f"{API}/dispatch/claim", json=by_outside, headers=auth(courier))
    assert r.status_code == 204
    db.refresh(far_job)
    assert far_job.status is JobStatus.OPEN and far_job.courier_id is None


def test_a_fresh_job_goes_to_nearby_couriers_first_then_the_ring_widens(db, store):
    now = clock.now()
    area = factories.square_zone(factories.SHANGHAI, 9000)
    near = helpers.make_courier(db, area=area, at=factories.offset(500, 0))
    far = helpers.make_courier(db, area=area, at=factories.offset(4000, 0))
    job = helpers.job_of(db, helpers.make_delivery_order(db, store))
    job.opened_at = now
    db.flush()
    far_at = factories.offset(4000, 0)

    assert pool.claim_next_job(db, far, lat=far_at[0], lon=far_at[1], now=now) is None
    minutes_to_reach = (4000 - pool.RING_START_M) / pool.RING_GROWTH_M_PER_MIN
    later = now + timedelta(minutes=minutes_to_reach + 0.5)
    assert pool.claim_next_job(db, far, lat=far_at[0], lon=far_at[1], now=later).id == job.id
    actions.release(db, far, job.id)
    # The plain first-come baseline offers it across the whole radius at once.
    assert (
        pool.claim_next_job(
            db, far, lat=far_at[0], lon=far_at[1], now=now, ranking=pool.Ranking.FIFO
        ).id
        == job.id
    )
    actions.release(db, far, job.id)
    near_at = factories.offset(500, 0)
    assert pool.claim_next_job(db, near, lat=near_at[0], lon=near_at[1], now=now).id == job.id


def test_an_escalated_jobs_ring_grows_on_past_the_radius(db, client):
    area = factories.square_zone(factories.SHANGHAI, 20_000)
    far_store = make_store(
        db, at=factories.offset(8000, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )  # 8 km: beyond 5 km
    courier = helpers.make_courier(db, area=area, at=factories.SHANGHAI)
    here = {"lat": factories.SHANGHAI[0], "lon": factories.SHANGHAI[1]}
    order = helpers.make_delivery_order(db, far_store, dropoff=factories.offset(8500, 0))
    job = helpers.job_of(db, order)

    r = client.get(f"{API}/dispatch/jobs", params=_params(here), headers=auth(courier))
    assert r.json()["items"] == []
    r = client.post(f"{API}/dispatch/jobs/{job.id}/claim", json=here, headers=auth(courier))
    assert r.status_code == 404

    def listed() -> list[str]:
        r = client.get(f"{API}/dispatch/jobs", params=_params(here), headers=auth(courier))
        return [i["id"] for i in r.json()["items"]]

    # Open for 12 minutes: the ring (2 km, growing 600 m a minute) would reach 8 km after 10,
    # but a job that is not at risk stays within the 5 km radius.
    job.opened_at = clock.now() - timedelta(minutes=12)
    db.flush()
    assert listed() == []

    job.priority = 1  # what the SLA monitor does to an at-risk job
    db.flush()
    assert listed() == [str(job.id)]
    r = client.post(f"{API}/dispatch/jobs/{job.id}/claim", json=here, headers=auth(courier))
    assert r.status_code == 200 and r.json()["priority"] == 1


def test_an_escalated_job_goes_to_couriers_near_its_store_first(db, client):
    area = factories.square_zone(factories.SHANGHAI, 20_000)
    far_store = make_store(
        db, at=factories.offset(8000, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )
    across_town = helpers.make_courier(db, area=area, at=factories.SHANGHAI)
    here = {"lat": factories.SHANGHAI[0], "lon": factories.SHANGHAI[1]}
    order = helpers.make_delivery_order(db, far_store, dropoff=factories.offset(8500, 0))
    job = helpers.job_of(db, order)
    job.priority = 1
    job.opened_at = clock.now() - timedelta(minutes=8)
    db.flush()

    # 8 minutes open: the ring has reached 6.8 km, short of the courier 8 km away, whose ride
    # to the store alone would take half an hour.
    r = client.get(f"{API}/dispatch/jobs", params=_params(here), headers=auth(across_town))
    assert r.json()["items"] == []
    r = client.post(f"{API}/dispatch/claim", json=here, headers=auth(across_town))
    assert r.status_code == 204
    next_door = helpers.make_courier(db, area=area, at=factories.offset(7800, 0))
    at = factories.offset(7800, 0)
    r = client.post(
        f"{API}/dispatch/claim", json={"lat": at[0], "lon": at[1]}, headers=auth(next_door)
    )
    assert r.status_code == 200 and r.json()["id"] == str(job.id)


def test_claim_next_takes_the_best_job_then_answers_204(db, client, store, courier_headers):
    now = clock.now()
    later = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=5))
    sooner = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=60))

    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 200, r.text
    assert r.json()["order_id"] == str(sooner.id)
    assert r.json()["status"] == "claimed"
    assert r.json()["address_text"] == "Room 501, 8 Example Rd"
    exact = to_latlon(helpers.job_of(db, sooner).dropoff)
    assert r.json()["dropoff"] == exact and r.json()["dropoff_exact"] is True

    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert r.json()["order_id"] == str(later.id)

    other = helpers.make_courier(db, home_store=store, at=factories.offset(300, 0))
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=auth(other))
    assert r.status_code == 204 and r.content == b""


@pytest.mark.parametrize("open_at_the_limit", [1, 0])
def test_a_courier_holds_at_most_the_configured_number_of_jobs(
    db, client, store, courier_headers, open_at_the_limit
):
    # With no job left open, too: the claim counts the held jobs in the statement that looks
    # for a job, and the courier at the limit still hears that they hold too many, not that
    # there is nothing to take.
    for _ in range(2 + open_at_the_limit):
        helpers.make_delivery_order(db, store)
    for _ in range(2):
        assert (
            client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers).status_code
            == 200
        )
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "too_many_jobs"
    assert r.json()["error"]["details"] == {"max_active_jobs": 2}
    open_left = db.scalar(select(func.count()).select_from(Job).where(Job.status == JobStatus.OPEN))
    assert open_left == open_at_the_limit
    mine = client.get(f"{API}/couriers/me/jobs", headers=courier_headers).json()
    assert len(mine) == 2


def test_a_claim_on_a_session_at_the_limit_is_refused_even_when_no_job_is_open(db, store, courier):
    # The same plan on a session (a batched trip's first job, the simulation): refused, not
    # "nothing to take", which a trip would answer with 204.
    for _ in range(2):
        helpers.make_delivery_order(db, store)
    for _ in range(2):
        assert pool.claim_next_job(db, courier, lat=HERE["lat"], lon=HERE["lon"]) is not None
    with pytest.raises(Conflict) as refused:
        pool.claim_next_job(db, courier, lat=HERE["lat"], lon=HERE["lon"])
    assert refused.value.code == "too_many_jobs"


def test_claiming_a_job_someone_took_is_a_conflict(db, client, store, courier, courier_headers):
    order = helpers.make_delivery_order(db, store)
    job = helpers.job_of(db, order)
    rival = helpers.make_courier(db, home_store=store, at=factories.offset(300, 0))
    assert (
        client.post(
            f"{API}/dispatch/jobs/{job.id}/claim", json=HERE, headers=auth(rival)
        ).status_code
        == 200
    )
    r = client.post(f"{API}/dispatch/jobs/{job.id}/claim", json=HERE, headers=courier_headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_taken"
    db.refresh(job)
    assert job.courier_id == rival.id


def test_claim_without_a_position_uses_the_last_known_one(db, client, store, courier_headers):
    job = helpers.job_of(db, helpers.make_delivery_order(db, store))
    r = client.post(f"{API}/dispatch/jobs/{job.id}/claim", headers=courier_headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "claimed"


def test_an_unconfigured_courier_is_told_so(db, client, store):
    helpers.make_delivery_order(db, store)
    courier = helpers.make_user_fast(db, Role.COURIER)
    r = client.post(f"{API}/dispatch/claim", json=HERE, headers=auth(courier))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "courier_not_configured"


def test_a_cancelled_order_is_not_offered_and_its_job_closes(db, client, store, courier_headers):
    order = helpers.make_delivery_order(db, store)
    job = helpers.job_of(db, order)
    store_actions.cancel_order(
        db, lifecycle.lock_order(db, order.id), reason="patient changed their mind", actor_id=None
    )
    # The cancellation closes the job itself, before any sweep runs.
    db.refresh(job)
    assert job.status is JobStatus.CANCELLED
    r = client.get(f"{API}/dispatch/jobs", params=_params(), headers=courier_headers)
    assert r.json()["items"] == []
    assert (
        client.post(f"{API}/dispatch/claim", json=HERE, headers=courier_headers).status_code == 204
    )
    assert actions.return_stale_claims(db) == 0
    db.refresh(job)
    assert job.status is JobStatus.CANCELLED


def test_bad_positions_are_refused(client, courier_headers):
    r = client.post(f"{API}/dispatch/claim", json={"lat": 91, "lon": 0}, headers=courier_headers)
    assert r.status_code == 422
    r = client.get(f"{API}/dispatch/jobs", params={"lat": 10, "lon": 500}, headers=courier_headers)
    assert r.status_code == 422
    r = client.get(f"{API}/dispatch/jobs", params={"lat": 10}, headers=courier_headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "location_required"


def test_only_couriers_use_courier_endpoints(db, client, store):
    job = helpers.job_of(db, helpers.make_delivery_order(db, store))
    for role in (Role.PATIENT, Role.PHARMACIST, Role.DOCTOR):
        headers = auth(helpers.make_user_fast(db, role))
        calls = [
            client.get(f"{API}/dispatch/jobs", params=_params(), headers=headers),
            client.post(f"{API}/dispatch/claim", json=HERE, headers=headers),
            client.post(f"{API}/dispatch/jobs/{job.id}/claim", json=HERE, headers=headers),
            client.post(f"{API}/dispatch/jobs/{job.id}/pickup", headers=headers),
            client.put(f"{API}/couriers/me/location", json=HERE, headers=headers),
        ]
        assert [c.status_code for c in calls] == [403] * len(calls), role
    assert client.get(f"{API}/dispatch/jobs", params=_params()).status_code == 401
    db.refresh(job)
    assert job.status is JobStatus.OPEN


def test_location_updates_are_throttled(client, courier_headers, db, courier):
    r = client.put(
        f"{API}/couriers/me/location", json={"lat": 31.24, "lon": 121.48}, headers=courier_headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["lat"] == 31.24 and r.json()["lon"] == 121.48
    r = client.put(
        f"{API}/couriers/me/location", json={"lat": 31.25, "lon": 121.49}, headers=courier_headers
    )
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    profile = couriers.courier_profile(db, courier.id)
    assert profile["location"] == {"lat": 31.24, "lon": 121.48}
    bad = client.put(
        f"{API}/couriers/me/location", json={"lat": "x", "lon": 0}, headers=courier_headers
    )
    assert bad.status_code == 422


def test_a_courier_without_a_profile_yet_reports_a_position(client, db):
    newcomer = helpers.make_user_fast(db, Role.COURIER)
    assert db.get(Courier, newcomer.id) is None
    r = client.put(
        f"{API}/couriers/me/location",
        json={"lat": 31.2401, "lon": 121.4802},
        headers=auth(newcomer),
    )
    assert r.status_code == 200, r.text
    assert r.json()["lat"] == 31.2401 and r.json()["lon"] == 121.4802
    # Written straight to JSON, as the documented model would write it.
    assert r.json() == CourierLocationOut.model_validate(r.json()).model_dump(mode="json")
    profile = couriers.courier_profile(db, newcomer.id)
    assert profile["location"] == {"lat": 31.2401, "lon": 121.4802}
    assert profile["location_at"] == datetime.fromisoformat(r.json()["at"])


def test_admin_sets_a_couriers_home_store_and_area(db, client, store, admin):
    courier = helpers.make_user_fast(db, Role.COURIER)
    area = factories.square_zone(factories.SHANGHAI, 3000)
    r = client.put(
        f"{API}/admin/couriers/{courier.id}",
        json={"home_store_id": store.id, "service_area": area},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    assert r.json()["home_store_id"] == store.id
    assert r.json()["service_area"]["type"] == "Polygon"
    assert (
        client.get(f"{API}/admin/couriers/{courier.id}", headers=auth(admin)).json()["active_jobs"]
        == 0
    )


def test_admin_courier_area_refuses_bad_input_and_changes_nothing(db, client, store, admin):
    courier = helpers.make_user_fast(db, Role.COURIER)
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[121.0, 31.0], [121.1, 31.1], [121.1, 31.0], [121.0, 31.1], [121.0, 31.0]]
        ],
    }
    r = client.put(
        f"{API}/admin/couriers/{courier.id}", json={"service_area": bowtie}, headers=auth(admin)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_area"
    assert "Self-intersection" in r.json()["error"]["message"]
    r = client.put(
        f"{API}/admin/couriers/{courier.id}", json={"home_store_id": 999999}, headers=auth(admin)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_store"
    patient = helpers.make_user_fast(db, Role.PATIENT)
    r = client.put(
        f"{API}/admin/couriers/{patient.id}", json={"home_store_id": store.id}, headers=auth(admin)
    )
    assert r.status_code == 404
    r = client.put(
        f"{API}/admin/couriers/{courier.id}",
        json={"home_store_id": store.id},
        headers=auth(courier),
    )
    assert r.status_code == 403
    assert couriers.get_courier(db, courier.id) is None


def test_the_claimed_order_state_is_untouched_until_pickup(db, store, courier):
    order = helpers.make_delivery_order(db, store)
    job = pool.claim_next_job(db, courier, lat=HERE["lat"], lon=HERE["lon"])
    assert job is not None and job.order_id == order.id
    db.refresh(order)
    assert order.status is OrderStatus.READY


def test_a_courier_claiming_from_afar_keeps_the_claim_for_the_ride_to_the_store(db, client):
    # An escalated job reaches a courier 8 km off: some 36 minutes' ride (1.35 detour, 18 km/h),
    # longer than the 30 a claim has. The claim shows when it is due, their ride and 15 minutes
    # more, and the sweep leaves it until then; a claim from next door keeps the 30 minutes.
    timeout = get_settings().dispatch_claim_timeout_minutes
    area = factories.square_zone(factories.SHANGHAI, 20_000)
    far_store = make_store(
        db, at=factories.offset(8000, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )
    across_town = helpers.make_courier(db, area=area, at=factories.SHANGHAI)
    here = {"lat": factories.SHANGHAI[0], "lon": factories.SHANGHAI[1]}
    next_door = helpers.make_courier(db, area=area, at=factories.offset(7800, 0))
    door = factories.offset(7800, 0)
    jobs = []
    for _ in range(2):
        job = helpers.job_of(
            db, helpers.make_delivery_order(db, far_store, dropoff=factories.offset(8500, 0))
        )
        job.priority = 1
        job.opened_at = clock.now() - timedelta(minutes=20)
        jobs.append(job)
    db.flush()

    r = client.post(f"{API}/dispatch/claim", json=here, headers=auth(across_town))
    assert r.status_code == 200, r.text
    far_claim = r.json()
    ride = distance_m(factories.SHANGHAI, factories.offset(8000, 0)) * 1.35 / 300
    due = datetime.fromisoformat(far_claim["pickup_due_at"])
    claimed = datetime.fromisoformat(far_claim["claimed_at"])
    assert ride > timeout
    assert (due - claimed).total_seconds() / 60 == pytest.approx(ride + timeout / 2, abs=0.5)
    other = next(job for job in jobs if str(job.id) != far_claim["id"])
    r = client.post(
        f"{API}/dispatch/jobs/{other.id}/claim",
        json={"lat": door[0], "lon": door[1]},
        headers=auth(next_door),
    )
    assert r.status_code == 200, r.text
    near_claim = r.json()
    near_due = datetime.fromisoformat(near_claim["pickup_due_at"])
    assert near_due - datetime.fromisoformat(near_claim["claimed_at"]) == timedelta(minutes=timeout)

    # 31 minutes on, the courier from afar is still riding: only the one next door is swept.
    assert actions.return_stale_claims(db, now=claimed + timedelta(minutes=timeout + 1)) == 1
    db.expire_all()
    assert db.get(Job, uuid.UUID(far_claim["id"])).courier_id == across_town.id
    assert db.get(Job, other.id).status is JobStatus.OPEN
    assert actions.return_stale_claims(db, now=due - timedelta(minutes=1)) == 0
    assert actions.return_stale_claims(db, now=due + timedelta(minutes=1)) == 1
    r = client.get(f"{API}/couriers/me/jobs", headers=auth(across_town))
    assert r.json() == []


def test_a_claims_pickup_time_is_the_timeout_or_the_ride_and_half_the_timeout():
    now = clock.now()
    timeout = get_settings().dispatch_claim_timeout_minutes
    assert pool.pickup_due(now, 5) == now + timedelta(minutes=timeout)
    assert pool.pickup_due(now, timeout / 2) == now + timedelta(minutes=timeout)
    assert pool.pickup_due(now, 36) == now + timedelta(minutes=36 + timeout / 2)
