"""The console in a real browser (Debian's Chromium, headless, driven by Playwright) against a
real server on the test database. Screenshots of each page at 1280 and 768 px go to
artifacts/screenshots/."""

import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o.users.models import Role, User
from tests.conftest import truncate_all
from tests.console.conftest import browser_login, screenshot
from tests.console.world import build_world
from tests.factories import make_user

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(engine, live_server):
    """The world committed for real (the server's own connections must see it), then removed."""
    with Session(engine, expire_on_commit=False) as session:
        built = build_world(session)
        session.commit()
    yield built
    truncate_all(engine)


def _expect_no_js_errors(page) -> None:
    assert page.js_errors == [], page.js_errors


def test_pharmacist_approves_one_prescription_and_rejects_another(new_page, world):
    page = new_page()
    browser_login(page, world.pharmacist_a)
    page.get_by_role("link", name="Prescriptions").click()
    assert page.get_by_role("heading", name="Prescriptions to review").is_visible()
    assert page.locator("table.queue tbody tr").count() == 2
    screenshot(page, "prescription-queue")

    page.goto(f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}")
    assert page.locator("#signature-badge").inner_text().strip() == "✔ Signature valid"
    image = page.get_by_role("img", name="The patient's photo of a paper prescription")
    image.wait_for()
    image.evaluate("img => img.decode()")  # loaded through the access-checked route
    assert image.evaluate("img => img.naturalWidth") == 240
    screenshot(page, "prescription-detail")
    page.get_by_role("button", name="Approve and release the order").click()
    assert "Prescription approved" in page.get_by_role("status").first.inner_text()
    assert page.locator("table.queue tbody tr").count() == 1

    page.goto(f"/console/stores/{world.store_a}/prescriptions/{world.rx_reject}")
    page.get_by_role("button", name="Reject").click()
    alert = page.locator("#reason-error")
    assert alert.inner_text() == "Give a reason to reject the prescription."
    assert page.get_by_label("Reason").get_attribute("aria-invalid") == "true"
    screenshot(page, "prescription-reject-needs-reason")
    page.get_by_label("Reason").fill("Interacts with the patient's current medication")
    page.get_by_role("button", name="Reject").click()
    assert "Prescription rejected" in page.get_by_role("status").first.inner_text()
    assert "No prescription is waiting for review." in page.content()
    _expect_no_js_errors(page)


def test_pickup_handover_after_a_wrong_code_and_an_at_risk_delivery(new_page, world):
    page = new_page()
    browser_login(page, world.pharmacist_a)
    page.goto(f"/console/stores/{world.store_a}/orders")

    at_risk = page.locator(f"#order-{world.at_risk_order}")
    assert "order--at-risk" in at_risk.get_attribute("class")
    assert at_risk.get_by_text("At risk").is_visible()
    # Highlighted for the eye too: the card's background is the alert colour.
    assert at_risk.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(253, 236, 234)"
    countdown = at_risk.locator(".countdown")
    first = countdown.inner_text()
    assert re.fullmatch(r"\d+:\d\d left", first), first
    page.wait_for_timeout(1200)
    assert countdown.inner_text() != first  # ticking every second in the browser
    screenshot(page, "orders-board")

    # The periodic htmx refresh leaves the board alone while a pickup code is being typed...
    stamp = page.locator(".board-summary time")
    before = stamp.get_attribute("datetime")
    code = page.locator(f"#order-{world.pickup_order}").get_by_label(
        re.compile("Pickup code for order")
    )
    code.fill("12")
    refresh = "htmx.trigger('#board', 'refresh-board')"
    page.evaluate(refresh)
    page.wait_for_timeout(700)
    assert stamp.get_attribute("datetime") == before and code.input_value() == "12"
    # ...and swaps in a fresh one otherwise.
    code.fill("")
    page.locator("h1").click()
    page.wait_for_timeout(1100)  # the refreshed board has a later timestamp
    with page.expect_response(re.compile(r"/orders/board$")):
        page.evaluate(refresh)
    page.wait_for_function(
        f"document.querySelector('.board-summary time').getAttribute('datetime') !== {before!r}"
    )

    card = page.locator(f"#order-{world.pickup_order}")
    code = card.get_by_label(re.compile("Pickup code for order"))
    wrong = "000000" if world.pickup_code != "000000" else "111111"
    code.fill(wrong)
    card.get_by_role("button", name="Hand over").click()
    card = page.locator(f"#order-{world.pickup_order}")
    error = card.get_by_role("alert")
    assert error.inner_text() == "The pickup code is wrong; 4 tries left."
    screenshot(page, "orders-handover-wrong-code")
    card.get_by_label(re.compile("Pickup code for order")).fill(world.pickup_code)
    card.get_by_role("button", name="Hand over").click()
    assert "Pickup handed over" in page.get_by_role("status").first.inner_text()
    assert page.locator(f"#order-{world.pickup_order}").count() == 0
    assert "completed" in page.locator(".done-list").inner_text()
    _expect_no_js_errors(page)


def test_another_store_s_pharmacist_cannot_open_the_prescription(new_page, world):
    page = new_page()
    browser_login(page, world.pharmacist_b)
    for url in (
        f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}",
        f"/console/stores/{world.store_b}/prescriptions/{world.rx_approve}",
    ):
        response = page.goto(url)
        assert response.status == 404
        assert page.get_by_role("heading", name="Not found").is_visible()
        assert "Mei Chen" not in page.content()
    image = page.request.get(
        f"/console/stores/{world.store_a}/prescriptions/{world.rx_approve}/attachment"
    )
    assert image.status == 404
    screenshot(page, "other-store-not-found")


def test_doctor_signs_in_the_browser_with_a_key_file(new_page, world):
    page = new_page()
    browser_login(page, world.doctor)
    assert page.get_by_role("heading", name="Prescription requests").is_visible()
    screenshot(page, "doctor-queue")
    page.get_by_role("button", name=re.compile("^Claim")).first.click()
    assert "Request claimed" in page.get_by_role("status").first.inner_text()
    page.get_by_label("Dose").fill("1 capsule")
    page.get_by_label("How often").fill("3 times a day")
    page.get_by_label("Days").fill("5")
    screenshot(page, "doctor-issue-form")
    page.get_by_role("button", name="Prepare for signing").click()

    page.get_by_label("Your private key file").set_input_files(
        files=[
            {
                "name": "doctor.pem",
                "mimeType": "application/x-pem-file",
                "buffer": world.doctor_key_pem,
            }
        ]
    )
    page.get_by_role("button", name="Sign with this key").click()
    status = page.locator("[data-sign-status]")
    status.wait_for()
    assert "Signed in this browser" in status.inner_text()
    signature = page.get_by_label("Signature (base64)").input_value()
    assert len(signature) == 88  # 64 bytes
    screenshot(page, "doctor-sign")
    page.get_by_role("button", name="Issue prescription").click()
    assert "Prescription issued and signed" in page.get_by_role("status").first.inner_text()
    _expect_no_js_errors(page)


def test_inventory_and_sla_pages_and_keyboard_access(new_page, world):
    page = new_page()
    browser_login(page, world.pharmacist_a)
    page.goto(f"/console/stores/{world.store_a}/inventory")
    # The first Tab reaches the skip link, which is then visible and jumps to the content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    assert skip.evaluate("el => el === document.activeElement")
    assert skip.bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.get_by_label("Name, generic name or barcode").fill("vitamin")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=vitamin"))
    assert page.locator("#results-caption").is_visible()
    screenshot(page, "inventory")

    page.get_by_role("link", name="SLA").click()
    chart = page.locator("svg.chart")
    assert chart.get_attribute("role") == "img"
    assert page.locator("svg.map circle.dropoff").count() >= 1
    assert page.locator("svg.map path.zone").count() == 1
    screenshot(page, "sla")

    # Every form control on these pages has a label.
    for url in (
        f"/console/stores/{world.store_a}/inventory",
        f"/console/stores/{world.store_a}/orders",
        f"/console/stores/{world.store_a}/sla",
    ):
        page.goto(url)
        unlabeled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.outerHTML)"""
        )
        assert unlabeled == [], (url, unlabeled)
    _expect_no_js_errors(page)


# --- languages: the browser's Accept-Language, and the switch remembered on the user ----------

BOARD_IN = {
    # locale: (html lang, heading, at-risk badge, countdown pattern, money sign, SLA chart title)
    "zh-CN": ("zh-CN", "订单", "有超时风险", r"剩余 \d+:\d\d", "¥", "每日准时送达率"),
    "en-GB": ("en", "Orders", "At risk", r"\d+:\d\d left", "CN¥", "On-time delivery rate per day"),
}


@pytest.mark.parametrize("locale", sorted(BOARD_IN))
def test_the_console_speaks_the_browser_s_language(new_page, world, locale):
    lang, heading, at_risk, countdown, money, chart_title = BOARD_IN[locale]
    page = new_page(locale=locale)
    page.goto("/console/login")
    assert page.locator("html").get_attribute("lang") == lang
    browser_login(page, world.pharmacist_a)
    page.goto(f"/console/stores/{world.store_a}/orders")
    assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    card = page.locator(f"#order-{world.at_risk_order}")
    assert card.get_by_text(at_risk).is_visible()
    # The countdown's words come from the page, so the script ticks in the same language.
    first = card.locator(".countdown").inner_text()
    assert re.fullmatch(countdown, first), first
    page.wait_for_timeout(1200)
    tick = card.locator(".countdown").inner_text()
    assert tick != first and re.fullmatch(countdown, tick), tick
    assert money in card.locator(".order__meta").inner_text()
    screenshot(page, f"orders-board-{lang}")

    page.goto(f"/console/stores/{world.store_a}/sla")
    assert page.locator("svg.chart > title").first.text_content() == chart_title
    screenshot(page, f"sla-{lang}")
    page.goto(f"/console/stores/{world.store_a}/inventory")
    screenshot(page, f"inventory-{lang}")
    _expect_no_js_errors(page)


def _new_pharmacist(engine, store_id: int) -> str:
    with Session(engine) as session:
        user = make_user(session, role=Role.PHARMACIST, store_ids=[store_id], name="Lan Zhou")
        session.commit()
        return user.email


def test_the_language_switch_is_remembered_for_the_user_and_before_sign_in(new_page, world, engine):
    email = _new_pharmacist(engine, world.store_a)
    # Before signing in: the switch sets a cookie, so the sign-in page itself changes language.
    page = new_page(locale="en-GB")
    page.goto("/console/login")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_role("button", name="中文").click()
    assert page.get_by_role("heading", name="登录").is_visible()
    assert page.get_by_role("button", name="中文").get_attribute("aria-pressed") == "true"
    screenshot(page, "login-zh-CN")

    # Signed in, the choice is stored on the user: another browser (English, no cookie) gets it.
    browser_login(page, email)
    page.goto(f"/console/stores/{world.store_a}/prescriptions")
    assert page.get_by_role("heading", name="待审核处方").is_visible()
    other = new_page(locale="en-GB")
    browser_login(other, email)
    other.goto(f"/console/stores/{world.store_a}/orders")
    assert other.get_by_role("heading", name="订单", exact=True).is_visible()
    with Session(engine) as session:
        assert session.scalar(select(User.language).where(User.email == email)) == "zh_CN"

    # Switching back on one device switches every device, and keeps the page.
    other.get_by_role("button", name="English").click()
    assert other.url.endswith(f"/console/stores/{world.store_a}/orders")
    assert other.get_by_role("heading", name="Orders", exact=True).is_visible()
    page.reload()
    assert page.get_by_role("heading", name="Prescriptions to review").is_visible()
    # The user's choice beats the browser's: a Chinese browser still gets English.
    third = new_page(locale="zh-CN")
    browser_login(third, email)
    third.goto(f"/console/stores/{world.store_a}/inventory")
    assert third.get_by_role("heading", name="Inventory", exact=True).is_visible()
    _expect_no_js_errors(page)
