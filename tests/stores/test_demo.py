from datetime import timedelta

from sqlalchemy import func, select

from dispatch.models import Courier
from o2o import clock, demo
from o2o.users import service as users_service
from stores.models import Lot, Product, Store
from stores.pickup_points import PickupPoint
from tests.stores.helpers import state


def test_demo_city_loads_once_and_the_pharmacist_works_at_every_store(db):
    created, city = demo.load_demo(db)
    assert len(created) == len(demo.DEMO_ACCOUNTS)
    assert city.stores_created == len(city.store_ids) == 25
    assert city.products_created == city.products >= 140
    assert city.stock_synced == 25 and city.lots > 2000

    stores = db.scalars(select(Store).where(Store.id.in_(city.store_ids))).all()
    assert sum(s.opening_hours is None for s in stores) == 2  # always open
    assert sum(not s.offers_delivery for s in stores) == 2  # pickup only
    assert all(s.delivery_zone is not None for s in stores if s.offers_delivery)
    products = db.scalars(select(Product)).all()
    assert any(p.rx_only and "amoxicillin" in p.generic_name for p in products)
    assert any(p.controlled and "codeine" in p.generic_name for p in products)
    assert any(p.max_per_order for p in products)
    soon = clock.today(stores[0].timezone) + timedelta(days=30)  # all in one zone
    expiring = db.scalar(select(func.count(Lot.id)).where(Lot.expiry_date < soon))
    assert expiring > 0

    pharmacist = users_service.get_by_email(db, demo.DEMO_PHARMACIST)
    db.refresh(pharmacist)
    assert pharmacist.store_ids == sorted(city.store_ids)
    assert pharmacist.language == "zh_CN"  # the Shanghai demo's console is in Chinese
    # The demo courier has a board to look at: a home store among the demo stores.
    courier = users_service.get_by_email(db, demo.DEMO_COURIER)
    assert db.get(Courier, courier.id).home_store_id in city.store_ids
    # Community pickup points in Shanghai, led by the demo leader, served by demo stores.
    leader = users_service.get_by_email(db, demo.DEMO_LEADER)
    points = db.scalars(select(PickupPoint)).all()
    assert len(points) == len(demo.DEMO_PICKUP_POINTS)
    assert {p.leader_user_id for p in points} == {leader.id}
    assert {p.store_id for p in points} <= set(city.store_ids)

    before = state(db)
    created_again, again = demo.load_demo(db)
    assert created_again == []
    assert (again.stores_created, again.products_created, again.stock_synced) == (0, 0, 0)
    assert again.store_ids == city.store_ids
    assert state(db) == before
    # A language chosen with the console's switch survives loading the demo again.
    pharmacist.language = "en"
    db.flush()
    demo.load_demo(db)
    assert pharmacist.language == "en"
    assert db.scalar(select(func.count(PickupPoint.id))) == len(points)


def test_demo_has_members_at_every_level_and_weeks_of_sales_to_analyse(db):
    from o2o.analytics import service as analytics
    from o2o.demo_sales import DEMO_MEMBERS, DEMO_REASON
    from o2o.members import service as members
    from o2o.orders.models import Order, OrderStatus

    _, city = demo.load_demo(db)
    for member in DEMO_MEMBERS:
        user = users_service.get_by_email(db, member.email)
        got = members.membership(db, user.id)
        assert got.level.name == member.level and got.points > 0
    sales = db.scalars(select(Order).where(Order.routing_reason == DEMO_REASON)).all()
    assert len(sales) > 100 and all(o.status is OrderStatus.COMPLETED for o in sales)
    days = {o.completed_at.date() for o in sales}
    assert len(days) > 30  # spread over the weeks, not one day
    store = db.get(Store, city.store_ids[0])
    report = analytics.abc_report(db, store, 90)
    counts = report["class_counts"]
    assert counts["A"] > 0 and counts["B"] > 0 and counts["C"] > counts["A"]
    assert analytics.turnover_report(db, store, 90)["dead_stock"]
