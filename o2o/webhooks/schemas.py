"""Webhook endpoints as the admin API reads and writes them."""

import re
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from o2o import outbound
from o2o.i18n import gettext as _

EVENT_TYPE = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")


def _outside(value: AnyHttpUrl) -> AnyHttpUrl:
    if len(str(value)) > 2000:
        raise ValueError(_("The URL is longer than 2000 characters."))
    try:
        outbound.check_registration(str(value))
    except outbound.UnsafeURL as exc:
        raise ValueError(str(exc)) from None
    return value


# A URL the platform will send to: at most 2,000 characters, and leading outside (o2o.outbound).
# The schema says http(s): "format: uri" alone admits any scheme (urn:..., mailto:...), which the
# validator refuses.
OutsideUrl = Annotated[
    AnyHttpUrl,
    AfterValidator(_outside),
    WithJsonSchema(
        {
            "type": "string",
            "format": "uri",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@:]",
            "minLength": 1,
            "maxLength": 2000,
        }
    ),
]
EventType = Annotated[str, StringConstraints(max_length=64, pattern=EVENT_TYPE.pattern)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: OutsideUrl
    event_types: list[EventType] = Field(min_length=1, max_length=50)
    # Leave out to have one generated (returned once, in the 201 response).
    secret: str | None = Field(None, min_length=24, max_length=128)
    description: str | None = Field(None, max_length=200)

    @field_validator("event_types")
    @classmethod
    def _event_types(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) > 64 or not EVENT_TYPE.match(item):
                raise ValueError(
                    f"{item!r} is not an event type: use e.g. 'order.sla_breached', 'order.*' "
                    "or '*'."
                )
        return sorted(set(value))


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    event_types: list[str]
    description: str | None
    is_active: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str
