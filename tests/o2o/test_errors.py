import json
from datetime import datetime, timedelta

from o2o import clock
from o2o.config import get_settings
from o2o.observability import configure_logging

API = "/api/v1"


def assert_error_shape(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_malformed_json_gets_the_error_shape(client):
    r = client.post(
        f"{API}/auth/register",
        content=b'{"email": "a@b.c", "password": ',
        headers={"Content-Type": "application/json"},
    )
    assert_error_shape(r, 422, "malformed_json")


def test_a_body_over_the_cap_gets_413(client):
    big = b"x" * (get_settings().max_body_bytes + 1)
    r = client.post(
        f"{API}/auth/register", content=big, headers={"Content-Type": "application/json"}
    )
    assert_error_shape(r, 413, "payload_too_large")


def test_a_streamed_body_over_the_cap_gets_413(client):
    chunk = b"x" * (1024 * 1024)

    def chunks():
        for _ in range(12):
            yield chunk

    r = client.post(
        f"{API}/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error_shape(r, 413, "payload_too_large")


def test_unknown_path_and_wrong_method_use_the_shape(client):
    assert_error_shape(client.get(f"{API}/no-such-thing"), 404, "not_found")
    assert_error_shape(client.get(f"{API}/auth/register"), 405, "method_not_allowed")


def test_validation_errors_say_where(client):
    r = client.post(f"{API}/auth/register", json={"email": "a@example.org"})
    assert_error_shape(r, 422, "invalid_input")
    locs = {tuple(d["loc"]) for d in r.json()["error"]["details"]}
    assert ("body", "password") in locs and ("body", "name") in locs


def test_every_response_carries_a_request_id(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_every_request_leaves_an_access_line_with_its_id_and_status(client, capsys):
    capsys.readouterr()
    client.get("/api/v1/stores/nearby?lat=91&lon=0", headers={"X-Request-ID": "line-42"})
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "line-42" in x]
    assert "/api/v1/stores/nearby" in line and "422" in line and "request" in line


def test_in_production_the_access_line_is_one_json_object_with_its_time(client, capsys):
    """The production log is JSON lines: the access line has the fields a log search filters
    on, with the request's own id and the time in UTC."""
    configure_logging(json_logs=True)
    try:
        capsys.readouterr()
        client.get("/api/v1/stores/nearby?lat=91&lon=0", headers={"X-Request-ID": "json-7"})
        lines = [x for x in capsys.readouterr().err.splitlines() if "json-7" in x]
    finally:
        configure_logging(json_logs=False)
    (line,) = lines
    entry = json.loads(line)
    assert entry.pop("duration_ms") >= 0
    stamped = datetime.fromisoformat(entry.pop("timestamp"))
    assert stamped.utcoffset() == timedelta(0)
    assert abs(stamped - clock.now()) < timedelta(minutes=1)
    assert entry == {
        "method": "GET",
        "path": "/api/v1/stores/nearby",
        "status": 422,
        "event": "request",
        "request_id": "json-7",
        "level": "info",
    }


def test_a_whole_json_number_counts_as_an_integer_and_a_fraction_does_not(client):
    """JSON Schema counts 3.0 as an integer, so the API does; 2.5, true and "3" are refused."""

    def search(quantity):
        body = {
            "location": {"lat": 31.23, "lon": 121.47},
            "items": [{"product_id": 1, "quantity": quantity}],
        }
        return client.post("/api/v1/search/stores", json=body)

    # 3.0 passes the integer check and reaches the catalogue, which has no product 1 here.
    whole = search(3.0)
    assert whole.status_code == 422
    assert whole.json()["error"]["code"] == "unknown_product"
    for refused in (2.5, True, "3"):
        response = search(refused)
        assert response.status_code == 422, refused
        assert response.json()["error"]["code"] == "invalid_input", refused
