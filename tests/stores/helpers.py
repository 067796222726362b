"""API bodies and state snapshots for the stores, catalogue and inventory tests (rows come from
tests.factories)."""

import itertools
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from tests.factories import SHANGHAI, STORE_ZONE, gtin

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
