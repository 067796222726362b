"""Data builders and form helpers for the console tests."""

import itertools
import re
from datetime import date, timedelta

from sqlalchemy.orm import Session

from o2o.geo import area_element, parse_area, point_element
from stores.models import Lot, Product, Store

_seq = itertools.count(1)

SHANGHAI = (31.2304, 121.4737)


def square_zone(lat: float, lon: float, half_deg: float = 0.02) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [
            [
                [lon - half_deg, lat - half_deg],
                [lon + half_deg, lat - half_deg],
                [lon + half_deg, lat + half_deg],
                [lon - half_deg, lat + half_deg],
                [lon - half_deg, lat - half_deg],
            ]
        ],
    }


def make_store(
    session: Session, *, lat: float = SHANGHAI[0], lon: float = SHANGHAI[1], **kw
) -> Store:
    n = next(_seq)
    zone = kw.pop("zone", square_zone(lat, lon))
    store = Store(
        name=kw.pop("name", f"Console Test Pharmacy {n}"),
        address=kw.pop("address", f"{n} Test Road"),
        location=point_element(lat, lon),
        timezone=kw.pop("timezone", "Asia/Shanghai"),
        offers_pickup=True,
        offers_delivery=True,
        delivery_zone=area_element(parse_area(zone)) if zone else None,
        **kw,
    )
    session.add(store)
    session.flush()
    return store


def make_product(session: Session, **kw) -> Product:
    n = next(_seq)
    product = Product(
        name=kw.pop("name", f"Testamol {n}"),
        generic_name=kw.pop("generic_name", "paracetamol"),
        strength=kw.pop("strength", "500 mg"),
        dosage_form=kw.pop("dosage_form", "tablet"),
        pack_size=kw.pop("pack_size", 20),
        gtin=kw.pop("gtin", f"{6900000000000 + n:014d}"),
        **kw,
    )
    session.add(product)
    session.flush()
    return product


def make_lot(session: Session, store: Store, product: Product, **kw) -> Lot:
    n = next(_seq)
    lot = Lot(
        store_id=store.id,
        product_id=product.id,
        lot_number=kw.pop("lot_number", f"L{n:05d}"),
        expiry_date=kw.pop("expiry_date", date.today() + timedelta(days=365)),
        on_hand=kw.pop("on_hand", 50),
        reserved=kw.pop("reserved", 0),
        price_minor=kw.pop("price_minor", 1850),
        currency=kw.pop("currency", "CNY"),
    )
    session.add(lot)
    session.flush()
    return lot


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)
