"""Substances as the safety checks code them (pure).

A substance's code is its normalized generic name: lower case, single spaces (`"clavulanic acid"`).
The catalogue's generic names give each product its substances (a combination product such as
"loratadine and pseudoephedrine" has two), patients' allergies are recorded with the same codes,
and the interaction table the chain loads names its pairs with them. A chain whose licensed
source uses other identifiers maps them to these names when it exports the CSV.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from o2o.i18n import N_
from o2o.i18n import gettext as _

SYSTEM = "urn:o2o:substance"
MAX_CODE_LENGTH = 100
SEVERITIES = ("contraindicated", "major", "moderate", "minor")
# Most severe first: warnings are listed in this order.
# The severities as a reader sees them, marked for translation.
SEVERITY_WORDS = {
    "contraindicated": N_("contraindicated"),
    "major": N_("major"),
    "moderate": N_("moderate"),
    "minor": N_("minor"),
}
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

# "A and B", "A/B", "A + B", "A, B", "A with B": the parts of a combination product.
_PARTS = re.compile(r"\s+and\s+|\s+with\s+|\s*[/+,;]\s*")


def normalize(name: str) -> str:
    """Return the substance code for a name: lower case, inner spaces collapsed (as the import's
    SQL does: `lower`, not `casefold`, so both give the same code)."""
    return " ".join(name.lower().split())


def is_valid_code(code: str) -> bool:
    """Say whether `code` is a normalized substance code of an allowed length."""
    return 0 < len(code) <= MAX_CODE_LENGTH and code == normalize(code) and code.isprintable()


def substances_of(generic_name: str) -> frozenset[str]:
    """Return the substance codes of a product from its generic name (several for a
    combination)."""
    parts = (normalize(part) for part in _PARTS.split(generic_name))
    return frozenset(part for part in parts if part)


def display_name(code: str) -> str:
    """Return a substance code as a name to show ("clavulanic acid" -> "Clavulanic acid")."""
    return code[:1].upper() + code[1:]


def pair(a: str, b: str) -> tuple[str, str]:
    """Return the pair in the order the interaction table stores it (by code point)."""
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class Medicine:
    """A product the patient takes or is about to take, and where it comes from."""

    product_id: int
    name: str
    substances: frozenset[str]
    source: str  # "this_order", "open_order" or "dispensed"
    order_id: str
    at: str | None = None  # when it was dispensed (ISO 8601), for "dispensed"


@dataclass(frozen=True)
class Interaction:
    substance_a: str
    substance_b: str
    severity: str
    advice: str


@dataclass(frozen=True)
class Allergy:
    code: str
    display: str
    reaction: str | None = None


def pairs_to_check(
    ordered: Iterable[Medicine], current: Iterable[Medicine]
) -> set[tuple[str, str]]:
    """The substance pairs an order brings together: within the order, and the order against the
    patient's current medication (pairs among current medicines alone were checked before)."""
    ordered = list(ordered)
    current = list(current)
    pairs: set[tuple[str, str]] = set()
    for i, med in enumerate(ordered):
        others = [m for j, m in enumerate(ordered) if j != i] + current
        for ours in med.substances:
            for other in others:
                for theirs in other.substances:
                    if ours != theirs:
                        pairs.add(pair(ours, theirs))
    return pairs


def warnings(
    ordered: list[Medicine],
    current: list[Medicine],
    allergies: list[Allergy],
    interactions: Iterable[Interaction],
) -> list[dict]:
    """The allergy and interaction warnings for an order, most severe first.

    An allergy matches an ordered product that contains the substance. An interaction matches a
    pair of substances of two different products, one of them ordered now; each pair is named
    once per product pair.
    """
    found: list[dict] = []
    by_code = {a.code: a for a in allergies}
    for med in ordered:
        for code in sorted(med.substances & by_code.keys()):
            allergy = by_code[code]
            reaction = (
                _(" (reaction: {reaction})").format(reaction=allergy.reaction)
                if allergy.reaction
                else ""
            )
            found.append(
                {
                    "code": "allergy",
                    "severity": "contraindicated",
                    "message": _(
                        "The patient is allergic to {substance}{reaction}, which {product} contains."
                    ).format(substance=allergy.display, reaction=reaction, product=med.name),
                    "product_id": med.product_id,
                    "substances": [code],
                    "advice": _(
                        "Do not dispense without confirming with the patient and the prescriber."
                    ),
                }
            )
    table = {(i.substance_a, i.substance_b): i for i in interactions}
    seen: set[tuple] = set()
    for i, med in enumerate(ordered):
        others = [m for j, m in enumerate(ordered) if j > i] + current
        for other in others:
            if other.product_id == med.product_id and other.source != "this_order":
                continue  # the same medicine again: the repeat-dispense warning covers it
            for ours in sorted(med.substances):
                for theirs in sorted(other.substances):
                    hit = table.get(pair(ours, theirs)) if ours != theirs else None
                    key = (med.product_id, other.product_id, pair(ours, theirs))
                    if hit is None or key in seen:
                        continue
                    seen.add(key)
                    where = {
                        "this_order": _("also in this order"),
                        "open_order": _("in another open order of the patient"),
                        "dispensed": _("dispensed to the patient on {day}").format(
                            day=(other.at or "")[:10]
                        ),
                    }[other.source]
                    found.append(
                        {
                            "code": "interaction",
                            "severity": hit.severity,
                            "message": _(
                                "{product} ({substance}) interacts with {other} "
                                "({other_substance}), {where}: {severity}."
                            ).format(
                                product=med.name,
                                substance=display_name(ours),
                                other=other.name,
                                other_substance=display_name(theirs),
                                where=where,
                                severity=_(SEVERITY_WORDS.get(hit.severity, hit.severity)),
                            ),
                            "product_id": med.product_id,
                            "substances": list(pair(ours, theirs)),
                            "advice": hit.advice,
                            "interacts_with": {
                                "product_id": other.product_id,
                                "order_id": other.order_id,
                                "source": other.source,
                                "dispensed_at": other.at,
                            },
                        }
                    )
    found.sort(key=lambda w: SEVERITY_RANK.get(w["severity"], len(SEVERITIES)))
    return found
