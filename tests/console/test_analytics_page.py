"""The stock analytics page through the TestClient (no browser): the Pareto and days-of-stock
charts as SVG, the classes in the table, dead stock, the CSV export, and who may see it."""

import csv
import io
import re
from datetime import timedelta

import pytest

from o2o import clock
from o2o.users.models import Role
from tests.factories import make_lot, make_product, make_store, make_user
from tests.members.helpers import completed_order


@pytest.fixture
def shop(db):
    store = make_store(db, name="Jing'an Pharmacy")
    patient = make_user(db, role=Role.PATIENT)
    now = clock.now()
    best = make_lot(db, store, make_product(db, name="Amoxicillin 500 mg"), price_minor=4000)
    middle = make_lot(db, store, make_product(db, name="Ibuprofen 200 mg"), price_minor=1000)
    tail = make_lot(db, store, make_product(db, name="=HYPERLINK(1)"), price_minor=100)
    make_lot(db, store, make_product(db, name="Unsold syrup"), on_hand=7, price_minor=2500)
    completed_order(db, patient, store, [(best, 2), (middle, 1)], at=now - timedelta(days=2))
    completed_order(db, patient, store, [(tail, 1)], at=now - timedelta(days=20))
    return {
        "store": store,
        "pharmacist": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
    }


def test_the_page_shows_the_abc_chart_stock_days_and_dead_stock(client, shop, login):
    login(shop["pharmacist"])
    page = client.get(f"/console/stores/{shop['store'].id}/analytics?days=30")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Stock analytics" in html
    # Two inline SVG charts, with their titles for screen readers.
    assert html.count("<svg ") == 2
    assert "Sales by product (ABC, Pareto)" in html and "Days of stock per product" in html
    # Bars coloured by class; the cumulative line drawn.
    assert 'data-class="A"' in html and 'class="cumulative"' in html
    table = re.findall(r'data-class="([ABC])"><th scope="row">([^<]+)</th>', html)
    assert table[0] == ("A", "Amoxicillin 500 mg")
    assert ("C", "Unsold syrup") in table
    dead = html.split('id="dead-table"')[1]
    assert "Unsold syrup" in dead and "Amoxicillin" not in dead
    # The menu links the page.
    assert f'/console/stores/{shop["store"].id}/analytics"' in html


def test_the_csv_export_has_every_product_and_no_formula(client, shop, login):
    login(shop["pharmacist"])
    r = client.get(f"/console/stores/{shop['store'].id}/analytics.csv?days=30")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["name"] for row in rows][:3] == [
        "Amoxicillin 500 mg",
        "Ibuprofen 200 mg",
        "'=HYPERLINK(1)",
    ]
    first = rows[0]
    assert first["abc_class"] == "A" and first["sales_minor"] == "8000"
    assert first["units_sold"] == "2"
    unsold = next(row for row in rows if row["name"] == "Unsold syrup")
    assert unsold["days_of_stock"] == "" and unsold["on_hand"] == "7"


def test_another_store_s_pharmacist_gets_no_page(client, db, shop, login):
    login(make_user(db, role=Role.PHARMACIST, store_ids=[make_store(db).id]))
    for path in ("analytics", "analytics.csv"):
        r = client.get(f"/console/stores/{shop['store'].id}/{path}")
        assert r.status_code == 404


def test_a_bad_period_is_an_error_page(client, shop, login):
    login(shop["pharmacist"])
    r = client.get(f"/console/stores/{shop['store'].id}/analytics?days=0")
    assert r.status_code == 422 and "<html" in r.text.lower()
