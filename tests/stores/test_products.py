import pytest
from sqlalchemy import text

from o2o.db import GENERIC_PLANS
from o2o.errors import InvalidInput
from o2o.users.models import Role
from stores import service
from tests.factories import auth, gtin, make_product, make_user
from tests.stores.helpers import API, product_body, state


@pytest.fixture
def admin(db):
    return make_user(db, role=Role.ADMIN)


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def test_admin_adds_a_product_anyone_can_read(client, db, admin):
    body = product_body(
        name="Amoxil 500 mg capsules",
        generic_name="amoxicillin",
        gtin="6901234567892",
        rx_only=True,
        max_per_order=3,
    )
    r = client.post(f"{API}/products", json=body, headers=auth(admin))
    assert r.status_code == 201, r.text
    product = r.json()
    # The route the dosage form implies and the equivalence key come with it.
    key = f"amoxicillin|{body['strength'].replace(' ', '').lower()}|{body['dosage_form']}|oral"
    assert product == {"id": product["id"], **body, "route": "oral", "equivalence_key": key}
    assert client.get(f"{API}/products/{product['id']}").json() == product


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("6901234567891", "gtin_check_digit"),  # check digit should be 2
        ("690123456789", "gtin_check_digit"),  # wrong check digit for a GTIN-12
        ("12345", "invalid_input"),
        ("69012345678920", "gtin_check_digit"),  # 14 digits, wrong check digit
        ("690123456789A", "invalid_input"),
        ("６９０１２３４５６７８９２", "invalid_input"),  # full-width digits are not ASCII digits
    ],
)
def test_a_bad_gtin_is_refused(client, db, admin, code, error):
    before = state(db)
    r = client.post(f"{API}/products", json=product_body(gtin=code), headers=auth(admin))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == error
    assert state(db) == before


@pytest.mark.parametrize("code", ["96385074", "036000291452", "4006381333931", "10614141000415"])
def test_valid_gtin_8_12_13_14_are_accepted(client, db, admin, code):
    r = client.post(f"{API}/products", json=product_body(gtin=code), headers=auth(admin))
    assert r.status_code == 201, r.text


def test_a_gtin_already_used_is_refused_also_when_padded(client, db, admin):
    existing = make_product(db, gtin="036000291452")
    before = state(db)
    for same in ("036000291452", "0036000291452", "00036000291452"):
        r = client.post(f"{API}/products", json=product_body(gtin=same), headers=auth(admin))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "gtin_taken"
        assert r.json()["error"]["details"] == {"product_id": existing.id}
    assert state(db) == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"pack_size": 0},
        {"max_per_order": 0},
        {"name": ""},
        {"rx_only": "maybe"},
        {"gtin": 6901234567892},
    ],
)
def test_bad_product_fields_are_refused(client, db, admin, overrides):
    before = state(db)
    r = client.post(f"{API}/products", json=product_body(**overrides), headers=auth(admin))
    assert r.status_code == 422
    assert state(db) == before


@pytest.mark.parametrize("role", [Role.PATIENT, Role.PHARMACIST, Role.DOCTOR])
def test_only_admins_add_products(client, db, role):
    caller = make_user(db, role=role)
    before = state(db)
    assert (
        client.post(f"{API}/products", json=product_body(), headers=auth(caller)).status_code == 403
    )
    assert client.post(f"{API}/products", json=product_body()).status_code == 401
    assert state(db) == before


def test_unknown_product_is_404_and_an_id_outside_the_range_is_invalid(client, db):
    r = client.get(f"{API}/products/999999")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "product_not_found"
    for product_id in ("0", "2147483648", "99999999999999999999"):
        r = client.get(f"{API}/products/{product_id}")
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


@pytest.fixture
def catalogue(db):
    return {
        "amoxil": make_product(db, name="Amoxil 500 mg capsules", generic_name="amoxicillin"),
        "augmentin": make_product(
            db, name="Augmentin 625 mg tablets", generic_name="amoxicillin and clavulanic acid"
        ),
        "panadol": make_product(db, name="Panadol 500 mg tablets", generic_name="paracetamol"),
        "clotrimazole": make_product(db, name="Canesten 1% cream", generic_name="clotrimazole"),
        "ibuprofen": make_product(
            db, name="Nurofen 200 mg", generic_name="ibuprofen", gtin=gtin(123, prefix="695")
        ),
    }


def test_search_by_name_is_case_insensitive_and_finds_parts(client, db, catalogue):
    assert _names(client.get(f"{API}/products", params={"q": "panadol"})) == [
        "Panadol 500 mg tablets"
    ]
    assert _names(client.get(f"{API}/products", params={"q": "NADO"})) == ["Panadol 500 mg tablets"]


def test_search_by_generic_name_ranks_the_closest_first(client, db, catalogue):
    names = _names(client.get(f"{API}/products", params={"q": "amoxicillin"}))
    assert names == ["Amoxil 500 mg capsules", "Augmentin 625 mg tablets"]


def test_search_by_gtin_prefix_and_whole_gtin(client, db, catalogue):
    code = catalogue["ibuprofen"].gtin
    assert _names(client.get(f"{API}/products", params={"q": code})) == ["Nurofen 200 mg"]
    assert _names(client.get(f"{API}/products", params={"q": code[:6]})) == ["Nurofen 200 mg"]
    assert _names(client.get(f"{API}/products", params={"q": "999999"})) == []


def test_like_wildcards_in_q_are_plain_characters(client, db, catalogue):
    assert _names(client.get(f"{API}/products", params={"q": "1%"})) == ["Canesten 1% cream"]
    assert _names(client.get(f"{API}/products", params={"q": "_"})) == []


def test_a_name_search_on_generic_plans_finds_by_its_own_pattern_and_leaves_the_settings(
    db, catalogue
):
    """The async endpoint's connections keep generic plans (o2o.db.GENERIC_PLANS), where one
    statement serves every pattern: each name search still finds what its own pattern names, and
    puts the planner settings it changed back for the rest of the transaction, after a refused
    cursor too."""
    generic = GENERIC_PLANS.rsplit("=", 1)[1]  # the async engines' plan_cache_mode
    db.execute(text(f"SET LOCAL plan_cache_mode = {generic}"))

    def settings() -> tuple[str, str]:
        return tuple(
            db.execute(
                text("SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')")
            ).one()
        )

    # Each pattern more than five times: psycopg prepares a statement after its fifth run.
    for _ in range(6):
        for q, expected in (
            ("amox", {"Amoxil 500 mg capsules", "Augmentin 625 mg tablets"}),
            ("pa", {"Panadol 500 mg tablets"}),
            ("canesten", {"Canesten 1% cream"}),
        ):
            products, _ = service.search_products(db, q)
            assert {p.name for p in products} >= expected, q
            assert settings() == ("on", generic), q
    with pytest.raises(InvalidInput):
        service.search_products(db, "amox", cursor="not-a-cursor")
    assert settings() == ("on", generic)


def test_search_pages_with_a_cursor_without_repeats(client, db):
    for n in range(7):
        make_product(db, name=f"Pagemol {n}", generic_name="pagemol")
    seen, cursor = [], None
    while True:
        params = {"q": "pagemol", "limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{API}/products", params=params).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"Pagemol {n}" for n in range(7)]


def test_listing_without_q_pages_through_everything(client, db, catalogue):
    first = client.get(f"{API}/products", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(f"{API}/products", params={"limit": 2, "cursor": first["next_cursor"]})
    ids = [p["id"] for p in first["items"]] + [p["id"] for p in second.json()["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 4


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "WyJnaXRpbiIsMV0"},  # a cursor of another listing
        {"q": "amox", "cursor": "WyJhbGwiLDFd"},
        {"limit": 0},
        {"limit": 101},
        {"q": "x" * 101},
    ],
)
def test_bad_paging_is_refused(client, db, catalogue, params):
    r = client.get(f"{API}/products", params=params)
    assert r.status_code == 422
    assert r.json()["error"]["code"] in ("invalid_cursor", "invalid_input")
