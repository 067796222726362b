"""Console fixtures: sign-in for TestClient tests, and a real server plus headless Chromium for
the browser tests (one browser for the package)."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from o2o.users.models import Role
from tests.conftest import ARTIFACTS
from tests.console.helpers import csrf_from
from tests.factories import PASSWORD, make_user

SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = (1280, 768)


def console_login(client, email: str, password: str = PASSWORD):
    page = client.get("/console/login")
    token = csrf_from(page.text)
    return client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


@pytest.fixture
def login(client):
    """Sign the test client in to the console as a user; returns the session's CSRF token."""

    def _login(user, password: str = PASSWORD) -> str:
        response = console_login(client, user.email, password)
        assert response.status_code == 303, response.text
        page = client.get("/console/login")
        return csrf_from(page.text)

    return _login


@pytest.fixture
def pharmacist_factory(db):
    def _make(*stores):
        return make_user(db, role=Role.PHARMACIST, store_ids=[s.id for s in stores])

    return _make


# --- browser tests -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(engine) -> Iterator[str]:
    """The real application on a free port, on the test database (it sees only committed data)."""
    import uvicorn

    from main import create_app

    port = _free_port()
    config = uvicorn.Config(
        create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium (Debian's) for the console tests.

    Package scope: Playwright's sync API runs an event loop in this thread while it is open,
    so it is closed before tests outside this package run.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (scripts/platform.sh deps test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, live_server):
    """Open pages in fresh browser contexts (own cookies each), closed after the test."""
    contexts = []

    def _new_page(locale: str = "en-GB"):
        # The locale is the browser's language: Chromium sends it as Accept-Language.
        context = browser.new_context(
            base_url=live_server, viewport={"width": WIDTHS[0], "height": 900}, locale=locale
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def on_console(msg) -> None:
            # Error statuses of pages are deliberate (a refused form answers 422); failed assets
            # are caught by the response hook below instead.
            if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                errors.append(msg.text)

        def on_response(response) -> None:
            if "/static/" in response.url and response.status >= 400:
                errors.append(f"{response.status} {response.url}")

        page.on("console", on_console)
        page.on("response", on_response)
        page.js_errors = errors
        return page

    yield _new_page
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> None:
    """Save the page at tablet and desktop widths under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(original)


def browser_login(page, email: str, password: str = PASSWORD) -> None:
    # By id, not by label: the form is in whichever language the browser asked for.
    page.goto("/console/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("form.form button[type=submit]").click()
    page.wait_for_load_state()
