"""The route class of every API router: JSON numbers read the way JSON Schema reads them, and
each sync endpoint's request session committed as the endpoint returns."""

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from o2o.db import commit_on_return


def _json_number(text: str) -> int | float:
    # JSON has one kind of number, and JSON Schema counts 3.0 as an integer: read a whole number
    # as an int, so integer fields take it while 2.5, true and "3" are still refused.
    value = float(text)
    return int(value) if value.is_integer() else value


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=_json_number)
        return self._json


class ApiRoute(APIRoute):
    """A route that reads whole JSON numbers as integers and commits sync endpoints on return."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = commit_on_return(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive, request._send))

        return handle
