"""The console's language: Accept-Language, the switch (cookie and the user's stored choice), and
pages, money and dates in Chinese (TestClient; the browser tests cover the same in Chromium)."""

import re

from o2o.console.auth import LANGUAGE_COOKIE
from o2o.users.models import Role
from tests.console.conftest import console_login
from tests.console.helpers import csrf_from
from tests.factories import make_store, make_user

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def _switch(client, language: str, next_url: str = "/console/login", csrf: str | None = None):
    token = csrf or csrf_from(client.get("/console/login").text)
    return client.post(
        "/console/language",
        data={"language": language, "next": next_url, "csrf_token": token},
        follow_redirects=False,
    )


def test_the_sign_in_page_follows_accept_language(client):
    zh = client.get("/console/login", headers=ZH)
    assert '<html lang="zh-CN">' in zh.text and '<h1 id="login-title">登录</h1>' in zh.text
    assert zh.headers["content-language"] == "zh-CN"
    en = client.get("/console/login", headers={"Accept-Language": "en-GB,en"})
    assert '<html lang="en">' in en.text and '<h1 id="login-title">Sign in</h1>' in en.text


def test_the_switch_sets_a_cookie_that_beats_accept_language(client):
    answer = _switch(client, "zh_CN")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    cookie = answer.headers["set-cookie"]
    assert f"{LANGUAGE_COOKIE}=zh_CN" in cookie
    assert "HttpOnly" in cookie and "Path=/console" in cookie and "SameSite=lax" in cookie
    page = client.get("/console/login", headers={"Accept-Language": "en"})
    assert '<h1 id="login-title">登录</h1>' in page.text


def test_the_switch_refuses_an_unknown_language_a_foreign_next_and_a_missing_token(client):
    refused = _switch(client, "fr_FR")
    assert refused.status_code == 422 and "zh_CN, en" in refused.text
    assert LANGUAGE_COOKIE not in refused.headers.get("set-cookie", "")
    away = _switch(client, "en", next_url="https://evil.example/")
    assert away.status_code == 303 and away.headers["location"] == "/console/"
    forged = client.post("/console/language", data={"language": "zh_CN"}, follow_redirects=False)
    assert forged.status_code == 403


def test_a_signed_in_users_choice_is_stored_and_wins_over_browser_and_cookie(client, db):
    store = make_store(db, name="Jing'an Pharmacy")
    user = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    assert console_login(client, user.email).status_code == 303
    csrf = csrf_from(client.get("/console/login").text)
    board = f"/console/stores/{store.id}/orders"
    assert _switch(client, "zh_CN", next_url=board, csrf=csrf).headers["location"] == board
    db.refresh(user)
    assert user.language == "zh_CN"
    client.cookies.set(LANGUAGE_COOKIE, "en", path="/console")  # stale cookie, English browser
    page = client.get(board, headers={"Accept-Language": "en"})
    assert "<h1>订单</h1>" in page.text and "O2O 药房工作台" in page.text
    assert '<html lang="zh-CN">' in page.text


def test_a_language_chosen_before_sign_in_becomes_the_users(client, db):
    user = make_user(db, role=Role.PHARMACIST, store_ids=[make_store(db).id])
    _switch(client, "zh_CN")
    assert console_login(client, user.email).status_code == 303
    db.refresh(user)
    assert user.language == "zh_CN"


def test_error_pages_and_money_in_chinese(client, db, login):
    store = make_store(db)
    user = make_user(db, role=Role.PHARMACIST, store_ids=[store.id], name="Pat Lin")
    login(user)
    missing = client.get("/console/stores/999999/orders", headers=ZH)
    assert missing.status_code == 404
    assert "<h1>未找到</h1>" in missing.text and "没有此门店。" in missing.text
    payments = client.get(f"/console/stores/{store.id}/payments", headers=ZH)
    assert payments.status_code == 200
    assert re.search(r'data-figure="online" data-minor="0">¥0\.00<', payments.text)
    assert "无需收款：没有未完成的到店付款订单。" in payments.text
