"""Password reset by a one-time, short-lived token delivered through the outbox: the gateway's
webhook receives the token, the token works once, before it expires, for an active account only,
and using it revokes every earlier session; the answer to a request never tells whether an
account exists."""

import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.outbox import OutboxEvent
from o2o.security import verify_password
from o2o.users import reset
from o2o.users.models import PasswordResetToken, Role, User
from o2o.webhooks import relay
from o2o.webhooks.models import OutboxDelivery
from tests.dispatch.test_webhooks import SECRET, Receiver
from tests.factories import auth, make_user

API = "/api/v1"
EVENT = "user.password_reset_requested"
OLD = "the-old-password-1"
NEW = "a-brand-new-password-2"


def _request(client, email: str, **kwargs):
    return client.post(f"{API}/users/password-reset", json={"email": email}, **kwargs)


def _confirm(client, token: str, password: str = NEW, **kwargs):
    return client.post(
        f"{API}/users/password-reset/confirm",
        json={"token": token, "new_password": password},
        **kwargs,
    )


def _sign_in(client, email: str, password: str):
    return client.post(f"{API}/auth/token", data={"username": email, "password": password})


def _me(client, token: str) -> int:
    return client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _events(db, user_id: int | None = None) -> list[OutboxEvent]:
    query = select(OutboxEvent).where(OutboxEvent.event_type == EVENT)
    if user_id is not None:
        query = query.where(OutboxEvent.aggregate_id == str(user_id))
    return list(db.scalars(query.order_by(OutboxEvent.created_at)))


def _token_for(client, db, user: User) -> str:
    r = _request(client, user.email)
    assert r.status_code == 202, r.text
    return _events(db, user.id)[-1].payload["token"]


def test_reset_end_to_end_through_the_gateway_webhook(engine, committed, caplog):
    """Request -> the gateway's webhook gets the token (a wildcard endpoint does not) -> confirm
    -> the old bearer token is refused -> the new password signs in; the token is never in the
    answer nor in the logs."""
    from main import create_app

    with Session(engine, expire_on_commit=False) as s:
        user = make_user(s, role=Role.PATIENT, email="Reset.Me@pharmacy.example.com", password=OLD)
        s.commit()
    caplog.set_level(logging.DEBUG)
    with (
        Receiver() as gateway,
        Receiver() as everything,
        TestClient(create_app(), raise_server_exceptions=False) as client,
    ):
        with session_scope() as s:
            relay.create_endpoint(
                s, url=gateway.url, event_types=[EVENT], secret=SECRET, description="gateway"
            )
            relay.create_endpoint(
                s, url=everything.url, event_types=["*", "user.*"], secret=SECRET, description=""
            )
        r = _sign_in(client, user.email, OLD)
        old_bearer = r.json()["access_token"]

        r = _request(client, "reset.me@PHARMACY.example.com")  # any case
        assert r.status_code == 202, r.text
        ahead = clock.now() + timedelta(seconds=1)
        with clock.use(lambda: ahead):
            result = relay.relay(session_scope)
        assert result.delivered == 1
        assert everything.requests == []
        (delivery,) = gateway.requests
        assert relay.verify(
            SECRET,
            delivery["headers"]["X-O2O-Timestamp"],
            delivery["body"],
            delivery["headers"]["X-O2O-Signature"],
        )
        sent = json.loads(delivery["body"])
        assert sent["type"] == EVENT and sent["aggregate_id"] == str(user.id)
        data = sent["data"]
        assert data["user_id"] == user.id and data["email"] == user.email
        token = data["token"]
        assert len(token) >= 43  # 256 bits, URL-safe base64
        assert token not in r.text
        expires = clock.now() + timedelta(minutes=get_settings().password_reset_token_minutes)
        assert abs((expires - _iso(data["expires_at"])).total_seconds()) < 60

        r = _confirm(client, token)
        assert r.status_code == 204, r.text
        assert _me(client, old_bearer) == 401
        assert _sign_in(client, user.email, OLD).status_code == 401
        fresh = _sign_in(client, user.email, NEW)
        assert fresh.status_code == 200 and _me(client, fresh.json()["access_token"]) == 200
        again = _confirm(client, token, "yet-another-password-3")
        assert again.status_code == 422
        assert again.json()["error"]["code"] == "invalid_reset_token"
    assert token not in caplog.text
    with Session(engine) as s:
        stored = s.scalars(select(PasswordResetToken)).one()
        assert stored.token_hash == hashlib.sha256(token.encode()).digest()
        assert stored.used_at is not None


def _iso(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value)


def test_unknown_and_inactive_addresses_get_the_same_answer_and_no_event(client, db):
    known = make_user(db, role=Role.PATIENT)
    gone = make_user(db, role=Role.COURIER)
    gone.is_active = False
    db.flush()

    answers = [
        _request(client, email)
        for email in (known.email, "nobody-here@pharmacy.example.com", gone.email)
    ]
    assert {r.status_code for r in answers} == {202}
    assert answers[0].json() == answers[1].json() == answers[2].json()
    assert answers[0].headers["content-length"] == answers[1].headers["content-length"]

    assert [e.aggregate_id for e in _events(db)] == [str(known.id)]
    assert db.scalar(select(func.count()).select_from(PasswordResetToken)) == 1


def test_a_new_request_replaces_the_earlier_token(client, db):
    user = make_user(db, role=Role.PATIENT, password=OLD)
    first = _token_for(client, db, user)
    second = _token_for(client, db, user)
    assert first != second
    r = _confirm(client, first)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reset_token"
    assert _confirm(client, second).status_code == 204


def test_a_token_expires(client, db):
    on_time = make_user(db, role=Role.PATIENT, password=OLD)
    late = make_user(db, role=Role.PATIENT, password=OLD)
    minutes = get_settings().password_reset_token_minutes
    on_time_token = _token_for(client, db, on_time)
    late_token = _token_for(client, db, late)

    just_before = clock.now() + timedelta(minutes=minutes - 1)
    with clock.use(lambda: just_before):
        assert _confirm(client, on_time_token).status_code == 204
    just_after = clock.now() + timedelta(minutes=minutes, seconds=1)
    with clock.use(lambda: just_after):
        r = _confirm(client, late_token)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reset_token"
    assert _sign_in(client, late.email, OLD).status_code == 200


def test_unknown_tokens_are_refused_and_nothing_changes(client, db):
    user = make_user(db, role=Role.PATIENT, password=OLD)
    _token_for(client, db, user)
    for token in ("x", "A" * 43, "not-a-token-at-all"):
        r = _confirm(client, token)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reset_token"
    assert _sign_in(client, user.email, OLD).status_code == 200


def test_deactivated_accounts_and_password_changes_void_the_token(client, db):
    admin = make_user(db, role=Role.ADMIN)
    courier = make_user(db, role=Role.COURIER, password=OLD)
    token = _token_for(client, db, courier)
    assert client.post(f"{API}/admin/users/{courier.id}/deactivate", headers=auth(admin)).is_success
    r = _confirm(client, token)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reset_token"
    # Reactivated within the token's lifetime: still void (issued before).
    assert client.post(f"{API}/admin/users/{courier.id}/reactivate", headers=auth(admin)).is_success
    assert _confirm(client, token).json()["error"]["code"] == "invalid_reset_token"

    patient = make_user(db, role=Role.PATIENT, password=OLD)
    token = _token_for(client, db, patient)
    bearer = _sign_in(client, patient.email, OLD).json()["access_token"]
    r = client.post(
        f"{API}/users/me/password",
        json={"current_password": OLD, "new_password": "changed-by-owner-4"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert r.status_code == 204
    assert _confirm(client, token).json()["error"]["code"] == "invalid_reset_token"
    assert _sign_in(client, patient.email, "changed-by-owner-4").status_code == 200


def test_new_password_follows_the_password_change_rules(client, db):
    user = make_user(db, role=Role.PATIENT, password=OLD)
    token = _token_for(client, db, user)
    r = _confirm(client, token, OLD)
    assert r.status_code == 422 and r.json()["error"]["code"] == "password_unchanged"
    r = _confirm(client, token, "short")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    # Refused without using the token up.
    assert _confirm(client, token).status_code == 204


def test_a_token_resets_only_its_own_account(client, db):
    """Whoever sends it (signed in as someone else or not), a token changes its owner's password
    only, and revokes only its owner's sessions."""
    owner = make_user(db, role=Role.PATIENT, password=OLD)
    other = make_user(db, role=Role.PATIENT, password=OLD)
    other_bearer = _sign_in(client, other.email, OLD).json()["access_token"]
    token = _token_for(client, db, owner)

    r = _confirm(client, token, headers={"Authorization": f"Bearer {other_bearer}"})
    assert r.status_code == 204
    assert _sign_in(client, owner.email, NEW).status_code == 200
    assert _sign_in(client, other.email, OLD).status_code == 200
    assert _sign_in(client, other.email, NEW).status_code == 401
    assert _me(client, other_bearer) == 200
    # The other account's request gets its own token, not a way to the owner's.
    other_token = _token_for(client, db, other)
    assert other_token != token
    assert _events(db, other.id)[-1].payload["email"] == other.email


def test_requests_are_rate_limited_per_address_and_per_email(client, db):
    settings = get_settings()
    per_email = int(settings.password_reset_email_rate_limit.split("/")[0])
    per_address = int(settings.password_reset_address_rate_limit.split("/")[0])
    user = make_user(db, role=Role.PATIENT)

    # Per email, known or unknown alike (a 429 tells nothing either).
    for email in (user.email, "nobody-here@pharmacy.example.com"):
        for _ in range(per_email):
            assert _request(client, email.upper()).status_code == 202
        r = _request(client, email)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
    assert len(_events(db, user.id)) == per_email

    # Per address, whatever the emails: another client is still served.
    sent = 2 * per_email + 2
    for i in range(per_address - sent):
        assert _request(client, f"someone{i}@pharmacy.example.com").status_code == 202
    assert _request(client, "one-more@pharmacy.example.com").status_code == 429


def test_the_token_is_only_stored_hashed(client, db):
    user = make_user(db, role=Role.PATIENT)
    token = _token_for(client, db, user)
    row = db.scalars(select(PasswordResetToken).where(PasswordResetToken.user_id == user.id)).one()
    assert row.token_hash == reset.token_digest(token) and len(row.token_hash) == 32
    assert token.encode() not in row.token_hash


def test_wildcard_endpoints_never_receive_reset_tokens(db):
    exact = relay.create_endpoint(
        db, url="https://gw.example.com/h", event_types=[EVENT], secret=SECRET, description=None
    )
    star = relay.create_endpoint(
        db, url="https://a.example.com/h", event_types=["*"], secret=SECRET, description=None
    )
    family = relay.create_endpoint(
        db, url="https://b.example.com/h", event_types=["user.*"], secret=SECRET, description=None
    )
    user = make_user(db, role=Role.PATIENT)
    reset.request_reset(db, user.email)
    relay.fan_out(db)
    endpoints = set(db.scalars(select(OutboxDelivery.endpoint_id)))
    assert endpoints == {exact.id}
    assert star.id not in endpoints and family.id not in endpoints


CONFIRMERS = 6


def test_concurrent_confirms_of_one_token_one_winner(engine, committed):
    from main import create_app

    with Session(engine, expire_on_commit=False) as s:
        user = make_user(s, role=Role.PATIENT, password=OLD)
        reset.request_reset(s, user.email)
        s.commit()
        token = _events(s, user.id)[-1].payload["token"]
        version = s.get(User, user.id).token_version

    app = create_app()
    barrier = threading.Barrier(CONFIRMERS)

    def confirm(n: int):
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return n, _confirm(c, token, f"racing-password-{n}")

    with ThreadPoolExecutor(CONFIRMERS) as pool:
        results = list(pool.map(confirm, range(CONFIRMERS)))

    codes = sorted(r.status_code for _, r in results)
    assert codes == [204] + [422] * (CONFIRMERS - 1), [r.text for _, r in results]
    assert {r.json()["error"]["code"] for _, r in results if r.status_code == 422} == {
        "invalid_reset_token"
    }
    winner = next(n for n, r in results if r.status_code == 204)
    with Session(engine) as s:
        stored = s.get(User, user.id)
        assert verify_password(f"racing-password-{winner}", stored.password_hash)
        assert stored.token_version == version + 1
