"""Serve the API with uvicorn's workers, each accepting on a listening socket of its own.

`python -m o2o.serve main:app --workers 4 ...` (the image's command; `--help` lists the options,
named as uvicorn's).

uvicorn's own workers share one listening socket, and a burst of new connections lands on
whichever worker wakes first: in `make load`'s courier rush (100 apps connecting at once) some
workers took many more of the couriers than others, and those couriers waited longest. Here
every worker binds the same address with SO_REUSEPORT, and the kernel spreads new connections
over the workers' sockets by a hash of each connection's addresses. uvicorn's supervisor still
starts, pings, restarts and stops the workers. A worker restarted binds again; while it is down,
new connections go to the others, and the connections waiting in its own socket's queue (not yet
accepted) are reset, as they would be if the kernel dropped them: their clients connect again.
"""

import logging
import socket
import sys
from dataclasses import dataclass
from typing import Annotated

import typer
import uvicorn
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def _bound(host: str, port: int, *, shared: bool) -> socket.socket:
    """A socket bound to host:port; `shared`: one that other processes may bind too
    (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on host:port that other processes may bind too (SO_REUSEPORT)."""
    sock = _bound(host, port, shared=True)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class OwnSocketWorker:
    """What each worker process runs: the server on a socket it binds itself (picklable, as the
    supervisor's spawned processes need)."""

    config: uvicorn.Config

    def __call__(self, sockets: list[socket.socket] | None = None) -> None:
        # The supervisor's shared sockets (none here) are not used.
        sock = listening_socket(self.config.host, self.config.port, self.config.backlog)
        uvicorn.Server(self.config).run(sockets=[sock])


def check_free(host: str, port: int) -> None:
    """Exit (status 1, with uvicorn's words) unless host:port is free: bound here without
    SO_REUSEPORT, so a server already listening there, this one's kind included, is found out
    instead of joined, and before any worker starts (a worker that could not bind would be
    restarted over and over)."""
    try:
        _bound(host, port, shared=False).close()
    except OSError as exc:
        logger.error("%s", exc)
        sys.exit(1)


def serve(config: uvicorn.Config) -> None:
    """Serve `config` with its workers, each on its own socket; one worker serves in-process."""
    if config.workers <= 1:
        uvicorn.Server(config).run()
        return
    check_free(config.host, config.port)
    Multiprocess(config, target=OwnSocketWorker(config), sockets=[]).run()


def main(
    app: Annotated[str, typer.Argument(help="The ASGI application, as module:attribute.")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-For/-Proto from FORWARDED_ALLOW_IPS.")
    ] = True,
    timeout_keep_alive: Annotated[
        int, typer.Option(help="Seconds an idle keep-alive connection stays open.")
    ] = 5,
    limit_concurrency: Annotated[
        int | None,
        typer.Option(help="Connections and tasks per worker past which new ones get 503."),
    ] = None,
    backlog: Annotated[int, typer.Option(help="Connections the kernel holds per socket.")] = 2048,
    h11_max_incomplete_event_size: Annotated[
        int | None, typer.Option(help="Bytes of request line and headers allowed.")
    ] = None,
    timeout_graceful_shutdown: Annotated[
        int | None, typer.Option(help="Seconds a shutdown waits for requests in flight.")
    ] = None,
    timeout_worker_healthcheck: Annotated[
        int, typer.Option(help="Seconds a worker has to answer the supervisor's ping.")
    ] = 5,
    access_log: Annotated[
        bool, typer.Option(help="uvicorn's access log (the application logs each request).")
    ] = False,
) -> None:
    """Serve the API: uvicorn's workers, each accepting on a socket of its own."""
    serve(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=proxy_headers,
            timeout_keep_alive=timeout_keep_alive,
            limit_concurrency=limit_concurrency,
            backlog=backlog,
            h11_max_incomplete_event_size=h11_max_incomplete_event_size,
            timeout_graceful_shutdown=timeout_graceful_shutdown,
            timeout_worker_healthcheck=timeout_worker_healthcheck,
            access_log=access_log,
        )
    )


if __name__ == "__main__":
    typer.run(main)
