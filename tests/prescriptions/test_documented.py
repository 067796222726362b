"""The README and the OpenAPI document describe the dispense record, the allergies, the
substances and the interaction import."""

from pathlib import Path

from tests.documented_errors import documented_422_codes

ROOT = Path(__file__).resolve().parents[2]


def _operation(app, method: str, path: str) -> dict:
    return app.openapi()["paths"][path][method]


def test_the_openapi_document_describes_the_additions(app):
    dispense = _operation(app, "get", "/api/v1/orders/{order_id}/fhir/dispense")
    assert "application/fhir+json" in dispense["responses"]["200"]["content"]
    assert "order_not_completed" in dispense["responses"]["409"]["description"]
    assert [p["name"] for p in dispense["parameters"]] == ["order_id", "all_lines"]
    put = _operation(app, "put", "/api/v1/users/me/allergies")
    codes = next(
        codes
        for method, pattern, codes in documented_422_codes(app.openapi())
        if method == "PUT" and pattern.match("/api/v1/users/me/allergies")
    )
    assert {"unknown_substance", "duplicate_allergy"} <= set(codes)
    assert (
        "allergies" in put["requestBody"]["content"]["application/json"]["schema"]["$ref"].lower()
    )
    assert "get" in app.openapi()["paths"]["/api/v1/users/me/allergies"]
    assert "get" in app.openapi()["paths"]["/api/v1/substances"]
    order = app.openapi()["components"]["schemas"]["OrderOut"]["properties"]
    assert "safety" in order
    prescription = app.openapi()["components"]["schemas"]["PrescriptionOut"]["properties"]
    assert "safety" in prescription


def test_the_readme_describes_the_additions():
    readme = (ROOT / "README.md").read_text()
    for needle in (
        "GET /api/v1/orders/{id}/fhir/dispense",
        "order_not_completed",
        "authorizingPrescription",
        "wasSubstituted",
        "PUT /api/v1/users/me/allergies",
        "unknown_substance",
        "duplicate_allergy",
        "/api/v1/substances",
        "python -m o2o pharmacy import-interactions",
        "demonstration data, not clinical advice",
        "O2O_INTERACTION_LOOKBACK_DAYS",
    ):
        assert needle in readme, needle
