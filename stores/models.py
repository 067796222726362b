"""Stores with their location and delivery zone, the product catalogue, and stock kept in lots."""

from datetime import date, datetime

from geoalchemy2 import Geography
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Date,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from o2o.db import Base


class Store(Base):
    __tablename__ = "stores"
    __table_args__ = (
        CheckConstraint("prep_minutes BETWEEN 0 AND 600", name="prep_minutes_range"),
        CheckConstraint("delivery_fee_minor >= 0", name="delivery_fee_nonnegative"),
        CheckConstraint("min_shelf_life_days BETWEEN 0 AND 3650", name="shelf_life_range"),
        CheckConstraint("courier_speed_kmh > 0 AND detour_factor >= 1", name="eta_params"),
        # Search's driven plan fetches a few hundred candidate stores by id and sorts them by
        # distance: with these columns that is an index-only scan, not a heap fetch each.
        Index(
            "ix_stores_id_search",
            "id",
            postgresql_include=[
                "location",
                "is_active",
                "offers_pickup",
                "offers_delivery",
                "timezone",
                "min_shelf_life_days",
            ],
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500))
    # geography: metres on the spheroid; GiST-indexed (spatial_index) for ST_DWithin and <-> KNN.
    location = mapped_column(Geography("POINT", srid=4326, spatial_index=True), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    # [{"weekday": 0..6 (Monday=0), "opens": "08:00", "closes": "22:00"}]; NULL = always open.
    opening_hours: Mapped[list | None] = mapped_column(JSONB)
    offers_pickup: Mapped[bool] = mapped_column(server_default=text("true"))
    offers_delivery: Mapped[bool] = mapped_column(server_default=text("false"))
    prep_minutes: Mapped[int] = mapped_column(server_default=text("10"))
    delivery_fee_minor: Mapped[int] = mapped_column(server_default=text("0"))
    currency: Mapped[str] = mapped_column(String(3), server_default="CNY")
    delivery_zone = mapped_column(Geography("MULTIPOLYGON", srid=4326, spatial_index=True))
    min_shelf_life_days: Mapped[int] = mapped_column(server_default=text("30"))
    # ETA = prep_minutes + distance_m * detour_factor / courier speed (DESIGN.md, Routing).
    courier_speed_kmh: Mapped[float] = mapped_column(server_default=text("18"))
    detour_factor: Mapped[float] = mapped_column(server_default=text("1.35"))
    # Scheduled delivery: how many orders one delivery slot (a window) of this store takes.
    slot_capacity: Mapped[int] = mapped_column(server_default=text("12"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


# Lower case, single spaces, no spaces inside the strength ("500 mg" = "500MG" = "500mg"), a
# decimal comma read as a point; generic|strength|form|route. A generated column: every way a
# product is written (API, imports, bulk SQL) carries it. Kept equal to migration 0018's text.
EQUIVALENCE_KEY_SQL = (
    r"regexp_replace(lower(btrim(generic_name)), '\s+', ' ', 'g') || '|' || "
    r"replace(regexp_replace(lower(strength), '\s+', '', 'g'), ',', '.') || '|' || "
    r"regexp_replace(lower(btrim(dosage_form)), '\s+', ' ', 'g') || '|' || lower(route)"
)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("pack_size > 0", name="pack_size_positive"),
        CheckConstraint(
            "max_per_order IS NULL OR max_per_order > 0", name="max_per_order_positive"
        ),
        # Trigram indexes make `ILIKE '%q%'` on names an index search, not a scan.
        Index(
            "ix_products_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
        Index(
            "ix_products_generic_name_trgm",
            "generic_name",
            postgresql_using="gin",
            postgresql_ops={"generic_name": "gin_trgm_ops"},
        ),
        Index("ix_products_equivalence_key", "equivalence_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    generic_name: Mapped[str] = mapped_column(String(200))
    strength: Mapped[str] = mapped_column(String(100))
    dosage_form: Mapped[str] = mapped_column(String(100))
    pack_size: Mapped[int]
    gtin: Mapped[str] = mapped_column(String(14), unique=True)
    rx_only: Mapped[bool] = mapped_column(server_default=text("false"))
    controlled: Mapped[bool] = mapped_column(server_default=text("false"))
    max_per_order: Mapped[int | None]
    # How it is taken ("oral", "topical", ...): part of what makes two products equivalent.
    route: Mapped[str] = mapped_column(String(50), server_default="oral")
    # generic|strength|form|route, normalised (stores.equivalents): products sharing it may stand
    # in for each other (pack sizes may differ; quantities convert by units).
    equivalence_key: Mapped[str | None] = mapped_column(
        String(500), Computed(EQUIVALENCE_KEY_SQL, persisted=True)
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Lot(Base):
    """Stock of one product at one store from one manufacturing lot."""

    __tablename__ = "lots"
    __table_args__ = (
        UniqueConstraint("store_id", "product_id", "lot_number", name="uq_lots_store_product_lot"),
        CheckConstraint("on_hand >= 0", name="on_hand_nonnegative"),
        CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="reserved_within_on_hand"),
        CheckConstraint("price_minor >= 0", name="price_nonnegative"),
        # Search from the rarest item: which stores hold product P (index-only with INCLUDE).
        Index(
            "ix_lots_product_store",
            "product_id",
            "store_id",
            postgresql_include=["expiry_date", "on_hand", "reserved"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # (store_id, product_id, lot_number) leads with store: "what does store S hold of P".
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    lot_number: Mapped[str] = mapped_column(String(64))
    expiry_date: Mapped[date] = mapped_column(Date)
    on_hand: Mapped[int]
    reserved: Mapped[int] = mapped_column(server_default=text("0"))
    price_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    product = relationship(Product, lazy="raise")


class InventorySync(Base):
    """A point-of-sale sync already applied; a repeat of its sync_id changes nothing."""

    __tablename__ = "inventory_syncs"

    store_id: Mapped[int] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    sync_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    lot_count: Mapped[int]
    applied_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProductStockStats(Base):
    """How many stores stock each product: lets search pick its plan by selectivity.

    Refreshed after bulk imports and periodically; staleness only affects speed, never results.
    """

    __tablename__ = "product_stock_stats"

    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
    )
    store_count: Mapped[int]
    refreshed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DeliverySlot(Base):
    """A scheduled delivery window of a store and how many orders it has taken.

    A row exists once a slot is first booked; `booked` only grows under `booked < capacity`
    in one UPDATE, so a slot is never overbooked, whatever the concurrency.
    """

    __tablename__ = "delivery_slots"
    __table_args__ = (
        CheckConstraint("booked >= 0 AND booked <= capacity", name="booked_within_capacity"),
        CheckConstraint("ends_at > starts_at", name="slot_span"),
    )

    store_id: Mapped[int] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    ends_at: Mapped[datetime]
    capacity: Mapped[int]
    booked: Mapped[int] = mapped_column(server_default=text("0"))


class FleetLoad(Base):
    """What the delivery fleet looks like around a store: the wait for a courier it implies.

    Written by dispatch (which sees jobs and couriers) every minute; read by search and checkout,
    which may not import dispatch. A row older than a few minutes is ignored (no estimate).
    """

    __tablename__ = "store_fleet_load"

    store_id: Mapped[int] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True
    )
    # The wait promised at search, checkout and as the store starts: the queue model's, or how
    # long the store's jobs are waiting now if that is longer.
    courier_wait_minutes: Mapped[float]
    # The queue model's wait alone, which the SLA monitor predicts with (null: as promised). Its
    # escalations send jobs across a wider ring, so they follow the model rather than the
    # cautious floor.
    queue_wait_minutes: Mapped[float | None]
    # The queue model's wait beyond preparation: how long a store may hold a new delivery order
    # before starting on it and still have it ready when the courier's turn comes.
    hold_minutes: Mapped[float] = mapped_column(server_default=text("0"))
    open_jobs: Mapped[int]
    # Couriers around the store who may take its jobs (home store or service area).
    couriers: Mapped[int]
    computed_at: Mapped[datetime]
