"""A query model read in one pass (`o2o.api.QueryModel`) answers and is documented exactly as
FastAPI's own reading of the same model."""

from typing import Annotated
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from main import create_app
from o2o.api import QueryModel
from o2o.errors import error_responses, install_error_handlers
from o2o.openapi import install_error_docs
from stores.search_router import NEARBY_QUERY
from stores.search_schemas import NearbyQuery


def _probe() -> TestClient:
    """FastAPI reading NearbyQuery its own way, next to QueryModel's, with the platform's errors."""
    app = FastAPI()
    install_error_handlers(app)
    refusals = error_responses(e422=("invalid_radius", "invalid_cursor"))

    @app.get("/fastapi", responses=refusals)
    async def by_fastapi(query: Annotated[NearbyQuery, Query()]):
        return query.model_dump()

    ours = QueryModel(NearbyQuery)

    @app.get("/ours", responses=refusals, openapi_extra=ours.openapi())
    async def by_query_model(request: Request):
        return ours.read(request).model_dump()

    install_error_docs(app)
    return TestClient(app)


PROBE = _probe()
FIELDS = ["lat", "lon", "radius_m", "limit", "cursor"]


def _both(query: list[tuple[str, str]]):
    string = urlencode(query)
    return PROBE.get(f"/fastapi?{string}"), PROBE.get(f"/ours?{string}")


def test_a_query_model_is_documented_as_fastapi_documents_it_with_the_same_refusals():
    paths = PROBE.app.openapi()["paths"]
    by_fastapi, ours = paths["/fastapi"]["get"], paths["/ours"]["get"]
    assert ours["parameters"] == by_fastapi["parameters"]
    assert ours["responses"] == by_fastapi["responses"]  # the 422 says invalid_input too
    platform = create_app().openapi()["paths"]["/api/v1/stores/nearby"]["get"]
    assert platform["parameters"] == by_fastapi["parameters"]
    assert platform["responses"]["422"] == by_fastapi["responses"]["422"]
    assert NEARBY_QUERY.model is NearbyQuery


def test_good_bad_missing_and_repeated_parameters_are_answered_as_fastapi_answers_them():
    cases = [
        [("lat", "31.2"), ("lon", "121.4")],
        [("lat", "31.2"), ("lon", "121.4"), ("radius_m", "2500"), ("limit", "5")],
        [("lat", "31.2"), ("lon", "121.4"), ("cursor", "abc_-1")],
        [("lat", "31.2")],  # lon missing
        [],
        [("lat", "north"), ("lon", "121.4")],
        [("lat", "91"), ("lon", "121.4")],
        [("lat", "31.2"), ("lon", "121.4"), ("radius_m", "0.5")],
        [("lat", "31.2"), ("lon", "121.4"), ("limit", "0")],
        [("lat", "31.2"), ("lon", "121.4"), ("limit", "2.5")],
        [("lat", "31.2"), ("lon", "121.4"), ("cursor", "not a cursor!")],
        [("lat", "31.2"), ("lon", "121.4"), ("cursor", "")],
        [("lat", "1"), ("lat", "31.2"), ("lon", "121.4")],  # the last value counts
        [("lat", "31.2"), ("lon", "121.4"), ("unknown", "x")],
    ]
    statuses = set()
    for query in cases:
        fastapi, ours = _both(query)
        assert (ours.status_code, ours.json()) == (fastapi.status_code, fastapi.json()), query
        statuses.add(ours.status_code)
    assert statuses == {200, 422}


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*FIELDS, "other"]),
            st.one_of(
                st.text(max_size=12),
                st.floats(allow_nan=True, allow_infinity=True).map(str),
                st.integers(-(10**12), 10**12).map(str),
            ),
        ),
        max_size=7,
    )
)
def test_any_query_string_is_answered_as_fastapi_answers_it(query):
    fastapi, ours = _both(query)
    assert (ours.status_code, ours.json()) == (fastapi.status_code, fastapi.json())


def test_a_query_model_with_a_list_or_a_nested_model_is_refused_where_it_is_declared():
    class Tags(NearbyQuery):
        tags: list[str] = []

    class Where(BaseModel):
        lat: float

    class Nested(BaseModel):
        where: Where

    for model in (Tags, Nested):
        with pytest.raises(TypeError, match="plain values only"):
            QueryModel(model)
