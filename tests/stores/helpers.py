"""API bodies and state snapshots for the stores, catalogue and inventory tests (rows come from
tests.factories)."""

import itertools
from datetime import date, timedelta
from typing import Any

from pyproj import Geod
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from o2o import clock
from stores.models import Lot
from tests.factories import SHANGHAI, STORE_ZONE, gtin, make_store

API = "/api/v1"

_seq = itertools.count(1)


def square_zone(lat: float = SHANGHAI[0], lon: float = SHANGHAI[1], half_deg: float = 0.02):
    """A closed square Polygon around a point (GeoJSON, lon first)."""
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


def store_body(**overrides: Any) -> dict:
    """A valid POST /stores body."""
    n = next(_seq)
    body = {
        "name": f"Test Pharmacy {n}",
        "address": f"{n} Test Road, Shanghai",
        "location": {"lat": SHANGHAI[0], "lon": SHANGHAI[1]},
        "timezone": "Asia/Shanghai",
        "opening_hours": None,
        "services": ["pickup", "delivery"],
        "prep_minutes": 10,
        "delivery_fee_minor": 500,
        "currency": "CNY",
        "delivery_zone": square_zone(),
    }
    body.update(overrides)
    return body


def product_body(**overrides: Any) -> dict:
    n = next(_seq)
    body = {
        "name": f"Testamol {n} 500 mg tablets",
        "generic_name": "paracetamol",
        "strength": "500 mg",
        "dosage_form": "tablet",
        "pack_size": 20,
        "gtin": gtin(),
        "rx_only": False,
        "controlled": False,
    }
    body.update(overrides)
    return body


def lot_line(product_id: int, **overrides: Any) -> dict:
    """One lot of a PUT /stores/{id}/inventory body."""
    line = {
        "product_id": product_id,
        "lot_number": "L1",
        # A year after the local day of the stores tests build (all in STORE_ZONE).
        "expiry_date": (clock.today(STORE_ZONE) + timedelta(days=365)).isoformat(),
        "on_hand": 12,
        "price_minor": 1850,
        "currency": "CNY",
    }
    line.update(overrides)
    return line


def state(db: Session) -> tuple:
    """Everything a refused request must leave as it was."""
    return db.execute(
        text(
            """
            SELECT (SELECT count(*) FROM stores),
                   (SELECT coalesce(string_agg(
                        concat_ws('|', id, name, address, ST_AsText(location), timezone,
                                  opening_hours::text, offers_pickup, offers_delivery,
                                  ST_AsText(delivery_zone), prep_minutes, currency),
                        ';' ORDER BY id), '') FROM stores),
                   (SELECT count(*) FROM products),
                   (SELECT coalesce(string_agg(
                        concat_ws('|', id, store_id, product_id, lot_number, expiry_date,
                                  on_hand, reserved, price_minor, currency),
                        ';' ORDER BY id), '') FROM lots),
                   (SELECT count(*) FROM inventory_syncs),
                   (SELECT coalesce(string_agg(product_id || ':' || store_count, ';'
                        ORDER BY product_id), '') FROM product_stock_stats)
            """
        )
    ).one()


# Search and the nearby list: stores placed around SHANGHAI, their stock, and search bodies.
GEOD = Geod(ellps="WGS84")
SEARCH = f"{API}/search/stores"
NEARBY = f"{API}/stores/nearby"
HERE = {"lat": SHANGHAI[0], "lon": SHANGHAI[1]}


def at(north_m: float = 0, east_m: float = 0, origin=SHANGHAI) -> dict:
    """The point north_m then east_m away from origin, along geodesics."""
    lon, lat, _ = GEOD.fwd(origin[1], origin[0], 0, north_m)
    lon, lat, _ = GEOD.fwd(lon, lat, 90, east_m)
    return {"lat": lat, "lon": lon}


def store_at(
    db, north_m: float = 0, east_m: float = 0, *, services=("pickup",), zone=None, **overrides
):
    """A store this far from SHANGHAI offering `services`, delivering within `zone` (GeoJSON)."""
    point = at(north_m, east_m)
    return make_store(
        db,
        at=(point["lat"], point["lon"]),
        zone=zone,
        offers_pickup="pickup" in services,
        offers_delivery="delivery" in services,
        **overrides,
    )


def stock(
    db,
    store,
    product,
    on_hand: int = 10,
    *,
    reserved: int = 0,
    days: int = 365,
    lot="L1",
    expiry_date: date | None = None,
):
    """A lot at `store` expiring `days` after the store's local today (or on `expiry_date`)."""
    db.execute(
        insert(Lot).values(
            store_id=store.id,
            product_id=product.id,
            lot_number=lot,
            expiry_date=expiry_date or clock.today(store.timezone) + timedelta(days=days),
            on_hand=on_hand,
            reserved=reserved,
            price_minor=1000,
            currency="CNY",
        )
    )


def search_body(items, location=HERE, **extra) -> dict:
    return {
        "location": location,
        "items": [{"product_id": p.id, "quantity": q} for p, q in items],
        **extra,
    }
