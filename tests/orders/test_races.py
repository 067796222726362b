"""Never oversell: real concurrent orders, each in its own committed transaction."""

import random
import threading
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, text

from o2o.config import get_settings
from o2o.db import get_engine, session_scope
from o2o.errors import DomainError
from o2o.order_flow import checkout, split_checkout
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import LotAllocation, Order, OrderLine
from o2o.users.models import Role, User
from stores.models import Lot
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset, payment_app
from tests.orders.helpers import order_body

pytestmark = pytest.mark.slow


def test_fifty_patients_racing_for_the_last_ten_units_never_oversell(real_client):
    # Fifty requests at once through the real application with its real pool (10 + 20
    # connections) and worker threads (40): more requests than either, all on one locked lot.
    # Every request must be answered on its merits, none dropped as busy or failed.
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        product = make_product(s, name="Oseltamivir 75 mg")
        # Plenty of an expiring lot that may not be sold, and the last 10 sellable units.
        make_lot(s, store, product, on_hand=100, days=5)
        lot = make_lot(s, store, product, on_hand=10)
        # One patient per request: a patient holds at most three unpaid orders at once.
        patients = [make_user(s, role=Role.PATIENT) for _ in range(50)]
        lot_id, product_id = lot.id, product.id
    headers = [auth(p) for p in patients]
    body = order_body([(product_id, 1)])

    lowest_available = [10]
    done = threading.Event()

    def watch():
        with get_engine().connect() as conn:
            while not done.is_set():
                value = conn.execute(
                    text("SELECT on_hand - reserved FROM lots WHERE id = :id"), {"id": lot_id}
                ).scalar_one()
                conn.commit()
                lowest_available[0] = min(lowest_available[0], value)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = threading.Barrier(50)

    def place(i: int):
        # Most send an Idempotency-Key, as apps are told to: that path takes its claim in a
        # transaction of its own and must not need a second connection while holding one.
        keyed = {"Idempotency-Key": f"race-{i}"} if i % 5 else {}
        start.wait()
        return real_client.post("/api/v1/orders", json=body, headers=headers[i] | keyed)

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(place, range(50)))
    finally:
        done.set()
        watcher.join()

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 40}, [r.text for r in responses if r.status_code != 409]
    for r in responses:
        if r.status_code == 409:
            error = r.json()["error"]
            assert error["code"] == "insufficient_stock"
            assert "Oseltamivir 75 mg" in error["message"]
            assert error["details"]["missing"] == [
                {"product_id": product_id, "quantity_missing": 1, "name": "Oseltamivir 75 mg"}
            ]
        else:
            assert [
                (line["product_id"], line["quantity"], line["price_minor"])
                for line in r.json()["lines"]
            ] == [(product_id, 1, 1850)]
    with session_scope() as s:
        sold = s.get(Lot, lot_id)
        assert (sold.on_hand, sold.reserved) == (10, 10)
        assert s.scalar(select(func.count()).select_from(Order)) == 10
    assert lowest_available[0] >= 0


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency_key"])
def test_one_patients_orders_racing_each_other_stop_at_the_unpaid_cap(real_client, keyed):
    # A patient may hold three unpaid orders: eight placed at once by one account (two phones,
    # a script) must leave exactly three, each read of the caps taken after the one before
    # committed, never two reading the same count.
    requests = 8
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        products = [make_product(s, name=f"Mask pack {i}") for i in range(requests)]
        for product in products:
            make_lot(s, store, product, on_hand=50)
        patient = make_user(s, role=Role.PATIENT)
        product_ids = [p.id for p in products]
        patient_id = patient.id
    headers = auth(patient)
    start = threading.Barrier(requests)

    def place(i: int):
        keys = {"Idempotency-Key": f"cap-{i}"} if keyed else {}
        start.wait()
        # A product each, so no order waits on another's lots: only the caps' lock orders them.
        return real_client.post(
            "/api/v1/orders", json=order_body([(product_ids[i], 1)]), headers=headers | keys
        )

    with ThreadPoolExecutor(max_workers=requests) as pool:
        responses = list(pool.map(place, range(requests)))

    limit = get_settings().max_unpaid_orders
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: limit, 409: requests - limit}, [r.text for r in responses]
    refusals = [r.json()["error"] for r in responses if r.status_code == 409]
    assert {e["code"] for e in refusals} == {"too_many_open_orders"}
    assert {e["details"]["unpaid_orders"] for e in refusals} == {limit}
    with session_scope() as s:
        placed = s.scalar(
            select(func.count()).select_from(Order).where(Order.patient_id == patient_id)
        )
        held = s.scalar(
            select(func.coalesce(func.sum(Lot.reserved), 0)).where(Lot.product_id.in_(product_ids))
        )
    assert (placed, held) == (limit, limit)


def _place_now(session, patient, body: OrderIn):
    return checkout.place_order(session, patient, body).id


def _place_stock_last(session, patient, body: OrderIn):
    # What the API does: the answer first, the lots' UPDATEs last, then the commit.
    return uuid.UUID(split_checkout.place_and_present(session, patient, body)["id"])


@pytest.mark.parametrize("placement", [_place_now, _place_stock_last], ids=["now", "stock_last"])
def test_random_multi_item_carts_racing_on_overlapping_stock_add_up(committed, placement):
    rng = random.Random(20261123)
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        products = [make_product(s) for _ in range(4)]
        lots = [
            make_lot(s, store, p, on_hand=rng.randint(1, 8), days=rng.randint(60, 900))
            for p in products
            for _ in range(rng.randint(1, 3))
        ]
        # A patient per cart: one patient may hold only three unpaid orders at once.
        patients = [make_user(s, role=Role.PATIENT) for _ in range(40)]
        payment_app(s)
        product_ids = [p.id for p in products]
        on_hand = {lot.id: lot.on_hand for lot in lots}
        lot_products = [(lot.product_id, lot.id) for lot in lots]
    carts = [
        [(pid, rng.randint(1, 4)) for pid in rng.sample(product_ids, rng.randint(1, 3))]
        for _ in range(40)
    ]
    start = threading.Barrier(len(carts))

    def place(patient, cart):
        start.wait()
        try:
            with session_scope() as session:
                return placement(session, patient, OrderIn(**order_body(cart)))
        except DomainError as exc:
            assert exc.code == "insufficient_stock", exc.message
            return None

    with ThreadPoolExecutor(max_workers=len(carts)) as pool:
        results = list(pool.map(place, patients, carts))

    placed = [(oid, cart) for oid, cart in zip(results, carts, strict=True) if oid is not None]
    assert placed, "some carts must fit"
    with session_scope() as s:
        reserved = dict(s.execute(select(Lot.id, Lot.reserved)).all())
        allocated = defaultdict(int)
        for lot_id, qty in s.execute(select(LotAllocation.lot_id, LotAllocation.quantity)):
            allocated[lot_id] += qty
        # Every reserved unit belongs to an order, and no lot holds more than it has.
        assert reserved == {lot_id: allocated.get(lot_id, 0) for lot_id in on_hand}
        assert all(reserved[i] <= on_hand[i] for i in on_hand)
        assert s.scalar(select(func.count()).select_from(Order)) == len(placed)
        for oid, cart in placed:
            lines = s.scalars(select(OrderLine).where(OrderLine.order_id == oid)).all()
            assert {(line.product_id, line.quantity) for line in lines} == set(cart)
            for line in lines:
                assert sum(a.quantity for a in line.allocations) == line.quantity
    # Stock only went down during the race, so a refused cart must still not fit at the end:
    # no order was refused while its stock was there.
    lot_product = {lot_id: pid for pid, lot_id in lot_products}
    left = defaultdict(int)
    for lot_id, units in on_hand.items():
        left[lot_product[lot_id]] += units - reserved[lot_id]
    for oid, cart in zip(results, carts, strict=True):
        if oid is None:
            assert any(left[pid] < qty for pid, qty in cart), (cart, dict(left))


def test_split_orders_racing_reserve_every_part_or_none(real_client):
    # Split orders need a plentiful item at one store and the last units of another item at a
    # second store, racing single-store orders for those last units. A split order that loses
    # the race for its second part must not keep its first: every split answered 201 holds both
    # parts, every refusal holds nothing, and neither lot is ever oversold.
    with session_scope() as s:
        plenty_store = make_store(s, at=offset(300, 0))
        scarce_store = make_store(s, at=offset(0, 700))
        plenty = make_product(s, name="Loratadine 10 mg")
        scarce = make_product(s, name="Cetirizine 10 mg")
        plenty_lot = make_lot(s, plenty_store, plenty, on_hand=30)
        scarce_lot = make_lot(s, scarce_store, scarce, on_hand=6)
        patients = [make_user(s, role=Role.PATIENT) for _ in range(24)]
        ids = (plenty.id, scarce.id, plenty_lot.id, scarce_lot.id)
    plenty_id, scarce_id, plenty_lot_id, scarce_lot_id = ids
    split = order_body([(plenty_id, 1), (scarce_id, 1)]) | {"allow_split": True}
    single = order_body([(scarce_id, 1)])
    bodies = [split if i % 3 else single for i in range(24)]
    start = threading.Barrier(24)

    def place(i: int):
        start.wait()
        return real_client.post("/api/v1/orders", json=bodies[i], headers=auth(patients[i]))

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(place, range(24)))

    assert Counter(r.status_code for r in responses) == {201: 6, 409: 18}, [
        r.text for r in responses if r.status_code not in (201, 409)
    ]
    won_splits = [r.json() for r in responses if r.status_code == 201 and "parts" in r.json()]
    won_single = [r for r in responses if r.status_code == 201 and "parts" not in r.json()]
    assert len(won_splits) + len(won_single) == 6
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "insufficient_stock"
    for won in won_splits:
        assert sorted(p["store"]["id"] for p in won["parts"]) == sorted(
            [plenty_store.id, scarce_store.id]
        )
    with session_scope() as s:
        plenty_lot, scarce_lot = s.get(Lot, plenty_lot_id), s.get(Lot, scarce_lot_id)
        assert (scarce_lot.on_hand, scarce_lot.reserved) == (6, 6)
        # All or nothing: the plentiful item is held by the winning split orders alone.
        assert (plenty_lot.on_hand, plenty_lot.reserved) == (30, len(won_splits))
        held = s.scalar(
            select(func.coalesce(func.sum(LotAllocation.quantity), 0)).where(
                LotAllocation.lot_id == plenty_lot_id
            )
        )
        assert held == len(won_splits)
        assert s.scalar(select(func.count()).select_from(Order)) == 2 * len(won_splits) + len(
            won_single
        )


class _Paused:
    """A placement stopped while it records its answer: its order is built and flushed, and,
    with the stock taken last, no lot is locked yet."""

    def __init__(self, patient_id, body: OrderIn) -> None:
        self.patient_id, self.body = patient_id, body
        self.building, self.go = threading.Event(), threading.Event()
        self.answers: list[dict] = []
        self.outcome: object = None
        self.thread = threading.Thread(target=self._run)

    def _record(self, payload: dict) -> None:
        self.answers.append(payload)
        self.building.set()
        assert self.go.wait(30)

    def _run(self) -> None:
        try:
            with session_scope() as s:
                patient = s.get(User, self.patient_id)
                self.outcome = split_checkout.place_and_present(
                    s, patient, self.body, record=self._record
                )
        except DomainError as exc:
            self.outcome = exc
        finally:
            self.building.set()

    def __enter__(self) -> "_Paused":
        self.thread.start()
        assert self.building.wait(30)
        assert self.answers, f"the placement ended before its answer: {self.outcome!r}"
        return self

    def __exit__(self, *exc) -> None:
        self.go.set()
        self.thread.join(30)


def _place_in_thread(patient_id, body: OrderIn, seconds: float = 10):
    """Place from another thread; return its answer, or None if it is still waiting."""
    got: list = []

    def run() -> None:
        with session_scope() as s:
            got.append(split_checkout.place_and_present(s, s.get(User, patient_id), body))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return got[0] if got else None


def _two_buyers_at_a_store(s, product_name: str):
    """A store, a product and two patients who will race for it (paying online)."""
    store = make_store(s, at=offset(400, 0))
    product = make_product(s, name=product_name)
    first, second = (make_user(s, role=Role.PATIENT) for _ in range(2))
    payment_app(s)
    return store, product, first.id, second.id


def test_a_buyer_of_the_same_lot_does_not_wait_for_an_order_still_being_built(committed):
    with session_scope() as s:
        store, product, first, second = _two_buyers_at_a_store(s, "Surgical masks, 10")
        lot = make_lot(s, store, product, on_hand=50)
        ids = (first, second, lot.id)
    body = OrderIn(**order_body([(product.id, 1)]))

    with _Paused(ids[0], body):
        # The first order's rows, events, payment and answer are written; its lot is not
        # locked yet, so the second buyer of the same lot goes straight through.
        answer = _place_in_thread(ids[1], body)
        assert answer is not None, "the second placement waited for the first one's lock"
        assert answer["lines"][0]["quantity"] == 1

    with session_scope() as s:
        assert s.get(Lot, ids[2]).reserved == 2
        assert s.scalar(select(func.count()).select_from(Order)) == 2


def test_units_sold_while_an_order_was_built_are_chosen_again_under_lock(committed):
    with session_scope() as s:
        store, product, first, second = _two_buyers_at_a_store(s, "Ibuprofen 200 mg")
        # FEFO takes the last unit of the first lot; the second lot is dearer.
        soon = make_lot(s, store, product, on_hand=1, days=100, price_minor=1500)
        later = make_lot(s, store, product, on_hand=5, days=300, price_minor=1900)
        ids = (first, second, soon.id, later.id)
    body = OrderIn(**order_body([(product.id, 1)]))

    with _Paused(ids[0], body) as paused:
        # The first order planned the last unit of the first lot; another buyer takes it.
        taken = _place_in_thread(ids[1], body)
        assert taken["lines"][0]["price_minor"] == 1500
    first_answer = paused.outcome

    # The first order was rolled back and placed again from the lots as they are now: its
    # answer (and the one recorded for its key) is the second lot's unit at its price.
    assert [a["lines"][0]["price_minor"] for a in paused.answers] == [1500, 1900]
    assert first_answer["lines"][0]["price_minor"] == 1900
    with session_scope() as s:
        assert [s.get(Lot, i).reserved for i in ids[2:]] == [1, 1]
        allocations = s.execute(
            select(Order.patient_id, LotAllocation.lot_id)
            .join(OrderLine, OrderLine.order_id == Order.id)
            .join(LotAllocation, LotAllocation.order_line_id == OrderLine.id)
        ).all()
        assert sorted(allocations) == sorted([(ids[1], ids[2]), (ids[0], ids[3])])


def test_an_order_whose_units_sold_out_while_it_was_built_is_refused_and_leaves_nothing(
    committed,
):
    with session_scope() as s:
        store, product, first, second = _two_buyers_at_a_store(s, "Paracetamol 500 mg")
        lot = make_lot(s, store, product, on_hand=1)
        ids = (first, second, lot.id)
    body = OrderIn(**order_body([(product.id, 1)]))

    with _Paused(ids[0], body) as paused:
        assert _place_in_thread(ids[1], body) is not None

    assert isinstance(paused.outcome, DomainError)
    assert paused.outcome.code == "insufficient_stock"
    with session_scope() as s:
        assert s.get(Lot, ids[2]).reserved == 1
        assert s.scalars(select(Order.patient_id)).all() == [ids[1]]
