"""The API's error messages in the language of Accept-Language; codes and the shape never change."""

import uuid

import pytest

from o2o.config import get_settings
from o2o.users.models import Role
from tests.factories import auth, make_user

API = "/api/v1"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_a_domain_error_speaks_the_asked_language_with_the_same_code(client, db):
    patient = make_user(db, role=Role.PATIENT)
    path = f"{API}/orders/{uuid.uuid4()}"
    zh = error(client.get(path, headers={**auth(patient), **ZH}), 404)
    en = error(client.get(path, headers={**auth(patient), **EN}), 404)
    plain = error(client.get(path, headers=auth(patient)), 404)
    assert zh["code"] == en["code"] == plain["code"] == "order_not_found"
    assert zh["message"] == "没有此订单。"
    assert en["message"] == plain["message"] == "No such order."


def test_the_answer_says_its_language_and_varies_by_it(client):
    zh = client.get(f"{API}/no-such-thing", headers=ZH)
    assert zh.headers["content-language"] == "zh-CN"
    assert "accept-language" in zh.headers["vary"].lower()
    assert error(zh, 404) == {"code": "not_found", "message": "此处没有内容。", "details": None}
    fr = client.get(f"{API}/no-such-thing", headers={"Accept-Language": "fr-FR"})
    assert fr.headers["content-language"] == "en"
    assert error(fr, 404)["message"] == "Nothing is here."


def test_a_422_translates_the_platforms_messages_and_keeps_locations_and_types(client):
    body = {"email": "a@example.org"}
    zh = error(client.post(f"{API}/auth/register", json=body, headers=ZH), 422)
    en = error(client.post(f"{API}/auth/register", json=body), 422)
    assert zh["code"] == en["code"] == "invalid_input"
    assert zh["message"] == "请求无效。" and en["message"] == "The request is not valid."
    by_loc = {tuple(d["loc"]): d for d in zh["details"]}
    assert by_loc[("body", "password")] == {
        "loc": ["body", "password"],
        "message": "缺少必填字段",
        "type": "missing",
    }
    assert [(d["loc"], d["type"]) for d in zh["details"]] == [
        (d["loc"], d["type"]) for d in en["details"]
    ]
    assert {d["message"] for d in en["details"]} == {"Field required"}


def test_a_rule_broken_inside_a_model_keeps_its_code_in_chinese(client, db):
    admin = make_user(db, role=Role.ADMIN)
    store = {
        "name": "Rule test",
        "address": "1 Test Rd",
        "location": {"lat": 31.23, "lon": 121.47},
        "timezone": "Mars/Olympus_Mons",
        "services": ["pickup"],
    }
    r = client.post(f"{API}/stores", json=store, headers={**auth(admin), **ZH})
    zh = error(r, 422)
    assert zh["code"] == "unknown_timezone"
    assert zh["message"].startswith("未知的 IANA 时区 'Mars/Olympus_Mons'")


@pytest.mark.parametrize(
    ("send", "status", "code", "message"),
    [
        (
            {"content": b'{"email": ', "headers": {"Content-Type": "application/json"}},
            422,
            "malformed_json",
            "请求体不是有效的 JSON。",
        ),
        (
            {
                "content": b"x" * (get_settings().max_body_bytes + 1),
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "payload_too_large",
            "请求体超过",
        ),
    ],
)
def test_unreadable_and_oversized_bodies_answer_in_chinese(client, send, status, code, message):
    headers = {**send["headers"], **ZH}
    got = error(
        client.post(f"{API}/auth/register", content=send["content"], headers=headers), status
    )
    assert got["code"] == code and got["message"].startswith(message)


def test_an_unauthenticated_call_is_refused_in_chinese(client):
    got = error(client.get(f"{API}/users/me", headers=ZH), 401)
    assert got["code"] == "not_authenticated"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in got["message"])


def test_wrong_method_uses_the_reason_phrase_in_chinese(client):
    got = error(client.get(f"{API}/auth/register", headers=ZH), 405)
    assert got == {"code": "method_not_allowed", "message": "不允许的请求方法", "details": None}
