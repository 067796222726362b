"""Console sign-in, session cookie, CSRF, and who may sign in."""

from o2o.console.auth import COOKIE_NAME
from o2o.users.models import Role
from tests.console.conftest import console_login
from tests.console.helpers import csrf_from
from tests.factories import make_store, make_user


def test_pharmacist_signs_in_with_api_credentials_and_gets_a_safe_cookie(client, db):
    store = make_store(db)
    user = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    response = console_login(client, user.email)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE_NAME}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Max-Age=1800" in cookie
    # One store: straight to its orders board.
    home = client.get("/console/", follow_redirects=True)
    assert home.status_code == 200
    assert store.name in home.text
    assert "Orders" in home.text


def test_patient_and_courier_are_refused_with_a_clear_message(client, db):
    for role in (Role.PATIENT, Role.COURIER):
        user = make_user(db, role=role)
        response = console_login(client, user.email)
        assert response.status_code == 403
        assert "for pharmacists and doctors" in response.text
        assert "Patients and couriers use the app" in response.text
        # Not signed in: pages still send them to the login form.
        page = client.get("/console/stores", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login")


def test_wrong_password_is_refused_and_counts_towards_the_login_limit(client, db):
    user = make_user(db, role=Role.PHARMACIST)
    for _ in range(5):
        response = console_login(client, user.email, "wrong-password-123")
        assert response.status_code == 401
        assert "Wrong email or password" in response.text
    # The same limit as the API: the sixth try is refused even with the right password.
    response = console_login(client, user.email)
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.text
    assert int(response.headers["retry-after"]) > 0


def test_post_without_csrf_token_is_refused(client, db):
    store = make_store(db)
    user = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    # Even the login form needs the session's token.
    client.get("/console/login")
    response = client.post("/console/login", data={"email": user.email, "password": "x" * 10})
    assert response.status_code == 403
    assert "reload the page" in response.text

    assert console_login(client, user.email).status_code == 303
    page = client.get("/console/stores")
    token = csrf_from(page.text)
    assert client.post("/console/logout", data={}).status_code == 403
    assert client.post("/console/logout", data={"csrf_token": "forged"}).status_code == 403
    # Still signed in after the refused posts.
    assert client.get("/console/stores", follow_redirects=False).status_code == 200
    # The header form (htmx) works like the field.
    ok = client.post("/console/logout", headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert ok.status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(client, db):
    user = make_user(db, role=Role.PHARMACIST)
    assert console_login(client, user.email).status_code == 303
    copied = client.cookies.get(COOKIE_NAME)
    token = csrf_from(client.get("/console/stores").text)
    client.post("/console/logout", data={"csrf_token": token})
    assert client.get("/console/stores", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, copied, path="/console")
    response = client.get("/console/stores", follow_redirects=False)
    assert response.status_code == 303


def test_a_tampered_cookie_is_not_a_session(client, db):
    user = make_user(db, role=Role.PHARMACIST)
    assert console_login(client, user.email).status_code == 303
    value = client.cookies.get(COOKIE_NAME)
    client.cookies.clear()
    client.cookies.set(
        COOKIE_NAME, value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"), path="/console"
    )
    assert client.get("/console/stores", follow_redirects=False).status_code == 303


def test_login_redirects_only_inside_the_console(client, db):
    user = make_user(db, role=Role.PHARMACIST)
    page = client.get("/console/login?next=https://evil.example/")
    token = csrf_from(page.text)
    response = client.post(
        "/console/login",
        data={
            "email": user.email,
            "password": "correct-horse-battery",
            "csrf_token": token,
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/"


def test_session_expires_when_idle_and_after_the_absolute_limit(monkeypatch):
    import time as real_time

    from itsdangerous import timed

    from o2o.console import auth

    session = auth.ConsoleSession(uid=7, login_at=real_time.time())
    raw = session.dump()
    assert auth.load_session(raw).uid == 7

    # Idle longer than the idle window: the signature's timestamp is too old.
    later = real_time.time() + auth.IDLE_SECONDS + 5
    monkeypatch.setattr(timed.time, "time", lambda: later)
    assert auth.load_session(raw).uid is None
    monkeypatch.undo()

    # Active all along (re-signed a minute ago) but signed in too long ago.
    old = auth.ConsoleSession(uid=7, login_at=real_time.time() - auth.ABSOLUTE_SECONDS - 1)
    assert auth.load_session(old.dump()).uid is None

    # A cookie older than the refresh interval is re-sent, sliding the idle window.
    soon = real_time.time() + auth.REFRESH_AFTER_SECONDS + 5
    monkeypatch.setattr(timed.time, "time", lambda: soon)
    monkeypatch.setattr(auth.time, "time", lambda: soon)
    assert auth.load_session(raw).changed is True


def test_cookie_is_secure_outside_development_and_test(monkeypatch):
    from o2o.config import Settings
    from o2o.console import auth

    session = auth.ConsoleSession()
    assert b"Secure" not in auth._cookie_header(session)
    production = Settings(
        env="production",
        database_url="postgresql+psycopg://app:pw@db:5432/o2o",
        token_secret_key="t" * 40,
        session_secret_key="s" * 40,
        identity_pepper="p" * 40,
    )
    monkeypatch.setattr(auth, "get_settings", lambda: production)
    header = auth._cookie_header(session).decode()
    assert "; Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


def test_pages_send_security_headers(client):
    response = client.get("/console/login")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text  # no inline scripts anywhere (CSP)
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and "max-age" in css.headers["cache-control"]
    htmx = client.get("/console/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.text.startswith("/*! htmx 2.")


def test_pharmacist_with_two_stores_switches_between_them(client, db):
    a, b, other = make_store(db), make_store(db), make_store(db)
    user = make_user(db, role=Role.PHARMACIST, store_ids=[a.id, b.id])
    assert console_login(client, user.email).status_code == 303
    listing = client.get("/console/", follow_redirects=True)
    assert a.name in listing.text and b.name in listing.text and other.name not in listing.text
    board = client.get(f"/console/stores/{a.id}/inventory")
    assert 'id="store-switch"' in board.text
    moved = client.get(
        "/console/switch-store",
        params={"store_id": b.id, "section": "inventory"},
        follow_redirects=False,
    )
    assert moved.headers["location"] == f"/console/stores/{b.id}/inventory"
    refused = client.get("/console/switch-store", params={"store_id": other.id})
    assert refused.status_code == 404


def test_a_password_change_ends_console_sessions_at_once(client, db):
    from tests.factories import PASSWORD, token_for

    store = make_store(db)
    user = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    assert console_login(client, user.email).status_code == 303
    assert client.get("/console/", follow_redirects=True).url.path != "/console/login"
    r = client.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a-brand-new-password-9"},
        headers={"Authorization": f"Bearer {token_for(user)}"},
    )
    assert r.status_code == 204
    assert client.get("/console/", follow_redirects=True).url.path == "/console/login"
