"""`make load`'s split of the machine's CPU time: each part's seconds go to that part (the server
under load with its workers, PostgreSQL, the load client with the children it waited for), read
from the operating system's counters, not guessed from wall time."""

import inspect
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import cpu_split

BURN_S = 0.4
# The counters tick in hundredths of a second; reading them costs a little of the client's own.
TOLERANCE_S = 0.1


def _burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


# The same, for the processes the tests start.
_BURN = inspect.getsource(_burn)
# A worker: named as its argument says, it says it is ready, burns the seconds it is told on its
# input, says so, then waits (alive when the row ends) or ends (`end`).
_WORKER = f"""
import sys, time
{_BURN}
name, then = sys.argv[1], sys.argv[2]
if name:
    with open("/proc/self/comm", "w") as comm:
        comm.write(name)
print("ready", flush=True)
_burn(float(sys.stdin.readline()))
print("burnt", flush=True)
if then == "wait":
    time.sleep(600)
"""
# A server: its worker is a child it waits for, as uvicorn's supervisor's are.
_SERVER = f"""
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", {_WORKER!r}, *sys.argv[1:]])
worker.wait()
time.sleep(600)
"""


class Started:
    """A process tree started for a test: told what to burn, read for what it says."""

    def __init__(self, *, name: str = "", then: str = "wait") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, name, then],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.said() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def said(self) -> str:
        return self.proc.stdout.readline().strip()

    def burn(self, seconds: float) -> None:
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def start():
    started: list[Started] = []

    def _start(**kwargs) -> Started:
        started.append(Started(**kwargs))
        return started[-1]

    yield _start
    for tree in started:
        tree.stop()


def test_a_servers_workers_time_is_the_servers_and_the_clients_own_is_the_clients(start):
    server = start()
    watch = cpu_split.Watch(server.pid)
    watch.start()
    server.burn(BURN_S)
    _burn(BURN_S / 2)
    assert server.said() == "burnt"
    split = watch.stop()

    assert split.cpu_s["server"] == pytest.approx(BURN_S, abs=TOLERANCE_S)
    assert split.cpu_s["client"] == pytest.approx(BURN_S / 2, abs=TOLERANCE_S)


def test_a_worker_that_ended_within_the_row_is_counted_through_its_parent(start):
    server = start(then="end")
    watch = cpu_split.Watch(server.pid)
    watch.start()
    server.burn(BURN_S)
    assert server.said() == "burnt"
    time.sleep(0.2)  # ended and waited for
    split = watch.stop()

    assert split.cpu_s["server"] == pytest.approx(BURN_S, abs=TOLERANCE_S)


def test_a_postgres_process_is_postgresqls_not_the_rests(start):
    database = start(name="postgres")
    watch = cpu_split.Watch(server_pid=None)
    watch.start()
    database.burn(BURN_S)
    assert database.said() == "burnt"
    split = watch.stop()

    assert split.cpu_s["PostgreSQL"] >= BURN_S - TOLERANCE_S
    assert split.cpu_s["server"] == 0


def test_a_child_the_client_waited_for_counts_as_the_clients_as_wrk_does():
    watch = cpu_split.Watch(server_pid=None)  # no server: nothing is the server's
    watch.start()
    subprocess.run(
        [sys.executable, "-c", f"import time\n{_BURN}\n_burn({BURN_S})"], check=True
    )  # fmt: skip
    split = watch.stop()

    assert split.cpu_s["server"] == 0
    # The child's interpreter starting up is the client's too.
    assert split.cpu_s["client"] == pytest.approx(BURN_S, abs=TOLERANCE_S + 0.1)


def test_a_window_is_read_between_its_two_moments_from_its_own_thread(start):
    server = start()
    server.burn(3 * BURN_S)  # burning before, through and after the window
    now = time.perf_counter()
    window = cpu_split.Watch(server.pid).between(now + 0.2, now + 0.2 + BURN_S)
    split = window.split()

    assert split.seconds == pytest.approx(BURN_S, abs=0.1)
    # The window's part of the burn alone: at most one core for its length, of three times that.
    assert 0 < split.cpu_s["server"] <= split.seconds + 0.05
