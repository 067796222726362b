"""The image's server (`o2o.serve`): uvicorn's workers, each accepting on a socket of its own."""

import os
import socket
import sys
import time

import httpx
import pytest

from o2o import serve
from tests.spare_services import free_port, kill, spawn

WORKERS = 3


def _listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (/proc/net/tcp; state 0A is LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[1] == wanted and row[3] == "0A")


@pytest.fixture
def served():
    port = free_port()
    args = [sys.executable, "-m", "o2o.serve", "tests.o2o.serve_probe:app", "--port", str(port),
            "--workers", str(WORKERS), "--timeout-worker-healthcheck", "60"]  # fmt: skip
    proc = spawn(args, dict(os.environ), "test-serve.log")
    try:
        deadline = time.monotonic() + 120
        while _listening_sockets(port) < WORKERS:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the workers did not all listen in 120 s"
            time.sleep(0.2)
        yield port
    finally:
        kill(proc, timeout=30)


def test_each_worker_listens_on_a_socket_of_its_own_and_new_connections_reach_them_all(served):
    # uvicorn's own workers share one listening socket: the port would have one.
    assert _listening_sockets(served) == WORKERS
    # New connections (each request closes its own) are spread by the kernel over the sockets.
    answered = {httpx.get(f"http://127.0.0.1:{served}/").text for _ in range(120)}
    assert len(answered) == WORKERS


@pytest.mark.parametrize("reuse_port", [False, True], ids=["a server", "a server of this kind"])
def test_an_address_another_server_listens_on_is_refused_before_any_worker_starts(reuse_port):
    with socket.socket() as taken:
        if reuse_port:  # what a leftover o2o.serve listens with: it must not be joined
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as exited:
            serve.check_free("127.0.0.1", taken.getsockname()[1])
    assert exited.value.code == 1


def test_a_free_address_passes_the_check():
    serve.check_free("127.0.0.1", free_port())  # returns: nothing listens there
