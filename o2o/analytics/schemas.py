"""What the stock analytics answers show."""

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


class PeriodOut(BaseModel):
    store_id: int
    days: int
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    timezone: str
    currency: str
    near_expiry_days: int

    model_config = {"populate_by_name": True}


class AbcItemOut(BaseModel):
    product_id: int
    name: str
    abc_class: Literal["A", "B", "C"]
    sales_minor: int
    units_sold: int
    share: float
    cumulative_share: float
    on_hand: int
    stock_value_minor: int
    # On hand over the units sold per day; null when nothing sold in the period.
    days_of_stock: float | None
    near_expiry_units: int
    near_expiry_value_minor: int
    last_sold_at: datetime | None


class AbcReportOut(PeriodOut):
    sales_minor: int
    class_counts: dict[str, int]
    items: list[AbcItemOut]


class DeadStockOut(BaseModel):
    product_id: int
    name: str
    on_hand: int
    stock_value_minor: int
    near_expiry_value_minor: int
    last_sold_at: datetime | None


class TurnoverReportOut(PeriodOut):
    sales_minor: int
    units_sold: int
    stock_value_minor: int
    stock_units: int
    turnover_ratio: float | None
    annualised_turnover: float | None
    days_of_stock: float | None
    near_expiry_value_minor: int
    dead_stock_value_minor: int
    dead_stock: list[DeadStockOut]
