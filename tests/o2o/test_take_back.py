"""Accounts you can take back: a password change or a deactivation revokes every bearer token and
console session issued before, at once (a per-user token version checked on every request)."""

from o2o.security import create_access_token
from o2o.users.models import Role
from tests.factories import auth, make_user

API = "/api/v1"


def _me(client, token: str) -> int:
    return client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _sign_in(client, email: str, password: str) -> str:
    r = client.post(f"{API}/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_password_change_revokes_earlier_tokens(client, db):
    user = make_user(db, role=Role.PATIENT, password="the-old-password-1")
    old = _sign_in(client, user.email, "the-old-password-1")
    other_device = _sign_in(client, user.email, "the-old-password-1")
    assert _me(client, old) == 200

    r = client.post(
        f"{API}/users/me/password",
        json={"current_password": "the-old-password-1", "new_password": "a-new-password-2"},
        headers={"Authorization": f"Bearer {old}"},
    )
    assert r.status_code == 204, r.text
    assert _me(client, old) == 401 and _me(client, other_device) == 401
    fresh = _sign_in(client, user.email, "a-new-password-2")
    assert _me(client, fresh) == 200
    r = client.post(
        f"{API}/auth/token", data={"username": user.email, "password": "the-old-password-1"}
    )
    assert r.status_code == 401


def test_password_change_needs_the_current_password(client, db):
    user = make_user(db, role=Role.PATIENT, password="the-old-password-1")
    token = _sign_in(client, user.email, "the-old-password-1")
    for body, code in (
        (
            {"current_password": "wrong-password", "new_password": "a-new-password-2"},
            "wrong_current_password",
        ),
        (
            {"current_password": "the-old-password-1", "new_password": "the-old-password-1"},
            "password_unchanged",
        ),
    ):
        r = client.post(
            f"{API}/users/me/password", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == code
    assert _me(client, token) == 200


def test_deactivation_takes_effect_on_the_next_request_and_reactivation_needs_a_new_sign_in(
    client, db
):
    admin = make_user(db, role=Role.ADMIN)
    courier = make_user(db, role=Role.COURIER, password="courier-password-1")
    token = _sign_in(client, courier.email, "courier-password-1")
    assert _me(client, token) == 200

    r = client.post(f"{API}/admin/users/{courier.id}/deactivate", headers=auth(admin))
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert _me(client, token) == 401
    assert (
        client.post(
            f"{API}/auth/token", data={"username": courier.email, "password": "courier-password-1"}
        ).status_code
        == 401
    )

    r = client.post(f"{API}/admin/users/{courier.id}/reactivate", headers=auth(admin))
    assert r.status_code == 200 and r.json()["is_active"] is True
    assert _me(client, token) == 401  # revoked for good
    assert _me(client, _sign_in(client, courier.email, "courier-password-1")) == 200

    assert (
        client.post(f"{API}/admin/users/{admin.id}/deactivate", headers=auth(admin)).json()[
            "error"
        ]["code"]
        == "own_account"
    )
    assert (
        client.post(f"{API}/admin/users/999999/deactivate", headers=auth(admin)).status_code == 404
    )


def test_a_token_without_the_current_version_is_refused(client, db):
    user = make_user(db, role=Role.PATIENT)
    stale = create_access_token(str(user.id), role="patient", version=user.token_version + 1)
    assert _me(client, stale) == 401
