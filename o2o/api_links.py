"""The OpenAPI links: from each operation that creates something (an order, a prescription
request, a store, a product, a doctor's key, a user, a webhook endpoint) or hands it out (the
job board, a claim) to the operations that read and act on it.

Apps can follow them, and a stateful fuzzer walks them: place an order, then read, cancel,
prepare and hand it over; ask for a prescription, then claim, sign, issue and review it."""

from typing import Any

from o2o.openapi import Link

ORDER = "/api/v1/orders/{order_id}"
PRESCRIPTION = "/api/v1/prescriptions/{prescription_id}"
JOB = "/api/v1/dispatch/jobs/{job_id}"
STORE = "/api/v1/stores/{store_id}"


def _each(
    source: tuple[str, str, str], targets: list[tuple[str, str]], **params: Any
) -> list[Link]:
    return [Link(source, target, params) for target in targets]


LINKS: list[Link] = [
    *_each(
        ("POST", "/api/v1/orders", "201"),
        [
            ("GET", ORDER),
            ("POST", f"{ORDER}/cancel"),
            ("POST", f"{ORDER}/prepare"),
            ("POST", f"{ORDER}/ready"),
            ("POST", f"{ORDER}/handover"),
        ],
        order_id="$response.body#/id",
    ),
    *_each(
        ("POST", "/api/v1/prescriptions", "201"),
        [
            ("GET", PRESCRIPTION),
            ("GET", f"{PRESCRIPTION}/attachment"),
            ("GET", f"{PRESCRIPTION}/audit"),
            ("GET", f"{PRESCRIPTION}/fhir"),
            ("POST", f"{PRESCRIPTION}/claim"),
            ("POST", f"{PRESCRIPTION}/signing-payload"),
            ("POST", f"{PRESCRIPTION}/issue"),
            ("POST", f"{PRESCRIPTION}/decline"),
            ("POST", f"{PRESCRIPTION}/review"),
            ("POST", f"{PRESCRIPTION}/refill"),
        ],
        prescription_id="$response.body#/id",
    ),
    *_each(
        ("POST", "/api/v1/prescriptions", "201"),
        [("GET", ORDER), ("POST", f"{ORDER}/cancel")],
        order_id="$response.body#/order_id",
    ),
    *_each(
        ("POST", "/api/v1/stores", "201"),
        [
            ("GET", STORE),
            ("PATCH", STORE),
            ("PUT", f"{STORE}/inventory"),
            ("GET", f"{STORE}/inventory"),
        ],
        store_id="$response.body#/id",
    ),
    *_each(
        ("POST", "/api/v1/products", "201"),
        [("GET", "/api/v1/products/{product_id}")],
        product_id="$response.body#/id",
    ),
    *[
        link
        for source, pointer in (
            (("GET", "/api/v1/dispatch/jobs", "200"), "$response.body#/items/0/id"),
            (("POST", "/api/v1/dispatch/claim", "200"), "$response.body#/id"),
            (("POST", f"{JOB}/claim", "200"), "$response.body#/id"),
            (("POST", "/api/v1/dispatch/trips", "200"), "$response.body#/drops/0/id"),
        )
        for link in _each(
            source,
            [
                ("GET", JOB),
                ("POST", f"{JOB}/pickup"),
                ("POST", f"{JOB}/deliver"),
                ("POST", f"{JOB}/fail"),
                ("POST", f"{JOB}/release"),
                ("POST", f"{JOB}/unlock"),
            ],
            job_id=pointer,
        )
    ],
    *_each(
        ("POST", "/api/v1/doctors/me/keys", "201"),
        [
            ("POST", "/api/v1/doctors/me/keys/{key_id}/proof"),
            ("POST", "/api/v1/doctors/me/keys/{key_id}/challenge"),
            ("POST", "/api/v1/admin/doctor-keys/{key_id}/approve"),
            ("POST", "/api/v1/admin/doctor-keys/{key_id}/revoke"),
        ],
        key_id="$response.body#/id",
    ),
    *_each(
        ("POST", "/api/v1/admin/users", "201"),
        [("GET", "/api/v1/admin/couriers/{user_id}"), ("PUT", "/api/v1/admin/couriers/{user_id}")],
        user_id="$response.body#/id",
    ),
    *_each(
        ("POST", "/api/v1/admin/webhooks", "201"),
        [("DELETE", "/api/v1/admin/webhooks/{endpoint_id}")],
        endpoint_id="$response.body#/id",
    ),
]
