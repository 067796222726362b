"""The API's routes are tried in order (hottest first, see `main.api_router`): whatever the order,
each route's own paths reach that route and no earlier one."""

import uuid

from fastapi.routing import APIRoute
from starlette.convertors import IntegerConvertor, UUIDConvertor
from starlette.routing import Match

SAMPLES = {IntegerConvertor: 7, UUIDConvertor: uuid.UUID(int=7)}


def _sample_path(route: APIRoute) -> str:
    path = route.path_format
    for name, convertor in route.param_convertors.items():
        value = SAMPLES.get(type(convertor), "sample")
        path = path.replace("{" + name + "}", convertor.to_string(value))
    return path


def test_every_route_is_reached_by_its_own_paths(_built_app):
    routes = [r for r in _built_app.routes if isinstance(r, APIRoute)]
    assert len(routes) > 50
    for route in routes:
        for method in route.methods:
            scope = {"type": "http", "path": _sample_path(route), "method": method}
            first = next(r for r in _built_app.routes if r.matches(scope)[0] is Match.FULL)
            assert first is route, f"{method} {scope['path']} reaches {first.path}"
