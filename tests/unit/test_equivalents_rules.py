"""The pure rules of equivalents: units across pack sizes, the route a form implies, and which
stand-ins let a store's stock cover a cart."""

from stores.cart import CartLine
from stores.equivalents import default_route, substitute_quantity
from stores.substitutes import Choice, choose


def test_packs_convert_by_units_only_when_whole():
    assert substitute_quantity(2, 12, 24) == 1
    assert substitute_quantity(1, 24, 12) == 2
    assert substitute_quantity(3, 20, 20) == 3
    assert substitute_quantity(1, 12, 24) is None
    assert substitute_quantity(2, 20, 7) is None


def test_the_form_implies_the_route():
    assert default_route("tablets") == "oral"
    assert default_route("Enteric-coated capsules") == "oral"
    assert default_route("gel") == "topical"
    assert default_route("eye drops") == "ophthalmic"
    assert default_route("nasal spray, 120 doses") == "nasal"
    assert default_route("inhaler, 200 doses") == "inhalation"
    assert default_route("pre-filled pens") == "parenteral"
    # Whole words only: gelatin is not a gel.
    assert default_route("soft gelatin capsules") == "oral"


A, B, C, X = 1, 2, 3, 9


def test_the_asked_product_wins_when_the_store_has_enough():
    lines = [CartLine(A, 2)]
    options = {A: [Choice(A, B, 2)]}
    assert choose(lines, {A: 2, B: 10}, options) == []


def test_the_first_equivalent_with_enough_units_stands_in():
    lines = [CartLine(A, 2), CartLine(X, 1)]
    options = {A: [Choice(A, B, 2), Choice(A, C, 1)]}
    assert choose(lines, {A: 1, B: 1, C: 1, X: 1}, options) == [Choice(A, C, 1)]


def test_a_line_without_stock_or_stand_in_fails_the_store():
    lines = [CartLine(A, 2), CartLine(X, 1)]
    options = {A: [Choice(A, B, 2)]}
    assert choose(lines, {B: 2}, options) is None
    assert choose(lines, {A: 2}, {}) is None


def test_a_product_stands_in_for_one_line_at_most():
    # Both lines could use B; an order has one line per product, so only one may.
    lines = [CartLine(A, 2), CartLine(C, 2)]
    options = {A: [Choice(A, B, 2)], C: [Choice(C, B, 2), Choice(C, X, 2)]}
    assert choose(lines, {B: 10}, options) is None
    assert choose(lines, {B: 10, X: 2}, options) == [Choice(A, B, 2), Choice(C, X, 2)]


def test_stand_ins_keep_the_units_and_the_limits():
    from stores.models import Product
    from stores.substitutes import stand_ins

    asked = Product(id=A, pack_size=12, max_per_order=None)
    double = Product(id=B, pack_size=24, max_per_order=None)
    odd = Product(id=C, pack_size=7, max_per_order=None)
    limited = Product(id=X, pack_size=12, max_per_order=1)
    options = stand_ins([CartLine(A, 2)], frozenset({A}), {A: asked}, {A: [double, odd, limited]})
    assert options == {A: [Choice(A, B, 1)]}
    # Not allowed for the line: none at all.
    assert stand_ins([CartLine(A, 2)], frozenset(), {A: asked}, {A: [double]}) == {}
