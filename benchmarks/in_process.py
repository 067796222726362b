"""Serving an ASGI application in the benchmark's own process, to measure the CPU time a request
costs it (`benchmarks.placement_cpu`, `benchmarks.hot_read_cpu`): its settings as production's,
its lifespan run by hand, its requests sent through httpx's ASGI transport, and its log lines
kept out of the run's output; `served` gives both benchmarks the application and the reference
side by side. `production_keys` serves `make load`'s servers too."""

import asyncio
import importlib.util
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, redirect_stderr
from pathlib import Path
from typing import TextIO

import httpx

from benchmarks import reference
from o2o.config import get_settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

# httpx's ASGI transport asks on every request whether it runs under trio by importing sniffio,
# which the project does not install: each failed import searches the whole path again, CPU time
# on the client's side of every request that a served application never spends. Marked absent,
# the import fails at once, and the transport goes on with asyncio as before.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


def production_keys() -> None:
    """Production refuses to start without its own keys: fresh random ones for this run, in the
    environment (servers started from it share them, and tokens signed here are theirs)."""
    for name in ("TOKEN_SECRET_KEY", "SESSION_SECRET_KEY", "IDENTITY_PEPPER", "SECRET_KEY"):
        os.environ.setdefault(f"O2O_{name}", secrets.token_urlsafe(48))
    get_settings.cache_clear()


def serve_as_production(limits: dict[str, str]) -> None:
    """Settle this process's settings as a production worker's (its settings, its JSON lines),
    with its own keys and `limits` (rate limits and caps meant for people, raised for a
    benchmark: still checked); the in-process client's log line per request is not the
    server's work, and is left out."""
    os.environ.update(limits)
    os.environ["O2O_ENV"] = "production"
    production_keys()
    logging.getLogger("httpx").setLevel(logging.WARNING)


class Lifespan:
    """An ASGI application's lifespan, run by hand (httpx's transport does not run it)."""

    def __init__(self, app) -> None:
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.state: dict = {}
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        await self.app(scope, self.inbox.get, self.outbox.put)

    async def __aenter__(self):
        self.task = asyncio.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task

    def transport(self) -> httpx.ASGITransport:
        async def with_state(scope, receive, send):
            scope["state"] = dict(self.state)
            await self.app(scope, receive, send)

        return httpx.ASGITransport(app=with_state)


@contextmanager
def server_log(name: str) -> Iterator[TextIO]:
    """Write the served application's lines (an access line for each request, as a served
    worker's) to artifacts/<name>-server.log; yield the run's own progress stream."""
    progress = sys.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / f"{name}-server.log", "w") as log, redirect_stderr(log):
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log)
        yield progress


@asynccontextmanager
async def served(name: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, TextIO]]:
    """Serve the application (`main.app`, imported once the settings are settled) and the
    reference (`benchmarks.reference`) in this process, each with its lifespan run; yield a
    client of each and the run's progress stream, the application's lines going to
    artifacts/<name>-server.log (`server_log`)."""
    from main import app

    with server_log(name) as progress:
        async with (
            Lifespan(app) as platform,
            Lifespan(reference.app) as bare,
            httpx.AsyncClient(transport=platform.transport(), base_url="http://platform") as client,
            httpx.AsyncClient(transport=bare.transport(), base_url="http://reference") as ref,
        ):
            yield client, ref, progress


async def cpu_ms(count: int, one: Callable[[], Awaitable[None]]) -> float:
    """This process's CPU time per call of `one`, in milliseconds, over `count` calls."""
    started = time.process_time()
    for _ in range(count):
        await one()
    return 1000 * (time.process_time() - started) / count
