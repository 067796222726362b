import jwt
import pytest

from o2o.config import get_settings
from o2o.users.models import Role
from tests.factories import PASSWORD, auth, make_user, token_for

API = "/api/v1"


def login(client, email, password):
    return client.post(f"{API}/auth/token", data={"username": email, "password": password})


def test_register_then_sign_in_and_read_me(client):
    r = client.post(
        f"{API}/auth/register",
        json={"email": "new.patient@example.org", "password": "long-enough-pw", "name": "New"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "patient" and body["email"] == "new.patient@example.org"
    assert "password" not in str(body) and "hash" not in str(body)

    r = login(client, "New.Patient@example.org", "long-enough-pw")
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert r.json()["token_type"] == "bearer"

    me = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json() == {
        "id": body["id"],
        "email": "new.patient@example.org",
        "name": "New",
        "role": "patient",
        "store_ids": [],
    }


@pytest.mark.parametrize(
    ("email", "code"),
    [
        ("someone@clinic.test", "undeliverable_email"),  # well formed; no mail reaches .test
        ("someone@intranet", "undeliverable_email"),  # no top-level domain
        ("someone.example.org", "invalid_input"),  # not an address at all
    ],
)
def test_register_refuses_an_address_no_mail_can_reach(client, db, email, code):
    r = client.post(
        f"{API}/auth/register",
        json={"email": email, "password": "long-enough-pw", "name": "New"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert login(client, email, "long-enough-pw").status_code == 401


def test_register_same_email_twice_is_a_conflict(client):
    payload = {"email": "twice@example.org", "password": "long-enough-pw", "name": "T"}
    assert client.post(f"{API}/auth/register", json=payload).status_code == 201
    r = client.post(f"{API}/auth/register", json={**payload, "email": "TWICE@example.org"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "password": "long-enough-pw", "name": "X"},
        {"email": "a@example.org", "password": "short", "name": "X"},
        {"email": "a@example.org", "password": "long-enough-pw", "name": ""},
        {"email": "a@example.org", "password": "long-enough-pw", "name": "X", "role": "admin"},
    ],
)
def test_register_refuses_bad_input_without_creating_anyone(client, db, payload):
    from sqlalchemy import func, select

    from o2o.users.models import User

    before = db.scalar(select(func.count()).select_from(User))
    r = client.post(f"{API}/auth/register", json=payload)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"
    assert db.scalar(select(func.count()).select_from(User)) == before


def test_wrong_password_is_refused(client, db):
    user = make_user(db)
    r = login(client, user.email, "wrong-password")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_credentials"
    assert "access_token" not in r.text


def test_sixth_quick_wrong_try_is_rate_limited_even_with_the_right_password(client, db):
    user = make_user(db)
    for _ in range(5):
        assert login(client, user.email, "wrong-password").status_code == 401
    r = login(client, user.email, PASSWORD)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= get_settings().login_failure_window_seconds


def test_failures_are_limited_per_client_address_across_accounts(client, db):
    users = [make_user(db) for _ in range(6)]
    for user in users[:5]:
        assert login(client, user.email, "wrong-password").status_code == 401
    assert login(client, users[5].email, PASSWORD).status_code == 429


def test_a_good_login_resets_the_account_counter(client, db):
    user = make_user(db)
    for _ in range(3):
        login(client, user.email, "nope-nope")
    assert login(client, user.email, PASSWORD).status_code == 200


def test_unknown_email_looks_like_a_wrong_password(client):
    r = login(client, "nobody@example.org", "whatever-pw")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_credentials"


def test_missing_token_is_401(client):
    r = client.get(f"{API}/users/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_expired_token_is_refused(client, db):
    user = make_user(db)
    expired = token_for(user, minutes=-1)
    r = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "token_expired"


def test_forged_token_is_refused(client, db):
    user = make_user(db, role=Role.PATIENT)
    claims = jwt.decode(token_for(user), options={"verify_signature": False})
    claims["role"] = "admin"
    forged = jwt.encode(claims, "another-secret-key-of-enough-length-000000", algorithm="HS256")
    r = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"


def test_unsigned_token_is_refused(client, db):
    user = make_user(db)
    claims = jwt.decode(token_for(user), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    r = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {unsigned}"})
    assert r.status_code == 401


def test_token_of_a_deactivated_user_is_refused(client, db):
    user = make_user(db)
    headers = auth(user)
    user.is_active = False
    db.flush()
    assert client.get(f"{API}/users/me", headers=headers).status_code == 401


def test_sign_ups_are_rate_limited_per_client_address(client, monkeypatch):
    monkeypatch.setattr(get_settings(), "register_rate_limit", "3/hour")
    for i in range(3):
        r = client.post(
            f"{API}/auth/register",
            json={"email": f"burst{i}@example.org", "password": "long-enough-pw", "name": "B"},
        )
        assert r.status_code == 201
    r = client.post(
        f"{API}/auth/register",
        json={"email": "burst9@example.org", "password": "long-enough-pw", "name": "B"},
    )
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("expired", 401, "token_expired"),
        ("deactivated", 401, "invalid_token"),
        ("revoked", 401, "invalid_token"),
        ("unknown user", 401, "invalid_token"),
        ("patient", 403, "forbidden"),
        # Let in: a courier with no home store or service area yet is refused by the claim.
        ("courier", 409, "courier_not_configured"),
    ],
)
def test_the_claim_loads_its_caller_on_the_driver_and_refuses_what_a_session_refuses(
    client, db, case, status, code
):
    # The next-job claim reads its caller on the driver's connection, not through a session:
    # the same tokens are refused there as everywhere else, each with the same answer.
    from o2o.security import create_access_token

    user = make_user(db, role=Role.PATIENT if case == "patient" else Role.COURIER)
    token = token_for(user, minutes=-1 if case == "expired" else None)
    if case == "deactivated":
        user.is_active = False
    if case == "revoked":
        user.token_version += 1  # a password change since the token was issued
    if case == "unknown user":
        token = create_access_token(str(user.id + 1000), role="courier")
    db.flush()
    r = client.post(
        f"{API}/dispatch/claim",
        json={"lat": 31.2304, "lon": 121.4737},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_a_claim_with_a_bad_token_is_refused_before_a_connection_is_taken(app, client, db):
    # The driver's pool is the hot reads' too: a refused token must not queue for it.
    from o2o.db import get_driver

    async def no_connection():
        raise AssertionError("a connection was taken for a refused token")
        yield  # pragma: no cover - a generator dependency, as get_driver is

    app.dependency_overrides[get_driver] = no_connection
    courier = make_user(db, role=Role.COURIER)
    for token in ("not-a-token", token_for(courier, minutes=-1)):
        r = client.post(
            f"{API}/dispatch/claim",
            json={"lat": 31.2304, "lon": 121.4737},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401, r.text
