"""`make load`'s split of the machine's CPU time: each part's seconds go to that part (the server
under load with its workers, the load client with the children it waited for), read from the
operating system's counters, not guessed from wall time."""

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import cpu_split

BURN_S = 0.4
# The counters tick in hundredths of a second; a busy machine adds a little of its own.
TOLERANCE_S = 0.1

# Spend `seconds` of CPU, then wait (a server's worker: alive when the row ends).
_BURN_THEN_WAIT = """
import sys, time
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    pass
print("burnt", flush=True)
time.sleep(600)
"""
# A server: its worker is a child of its own, as uvicorn's are.
_SERVER = f"""
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", {_BURN_THEN_WAIT!r}, sys.argv[1]],
                          stdout=sys.stdout)
worker.wait()
"""


def _burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


@pytest.fixture
def serve():
    """Start a server whose worker burns the given seconds of CPU, then waits."""
    started = []

    def start(burn_s: float) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(burn_s)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_servers_workers_time_is_the_servers_and_the_clients_own_is_the_clients(serve):
    server = serve(BURN_S)
    watch = cpu_split.Watch(server.pid)
    watch.start()
    # The server's worker burns its share while this process burns the client's.
    _burn(BURN_S / 2)
    assert server.stdout.readline().strip() == "burnt"
    split = watch.stop()

    assert split.cpu_s["server"] == pytest.approx(BURN_S, abs=TOLERANCE_S)
    assert split.cpu_s["client"] == pytest.approx(BURN_S / 2, abs=TOLERANCE_S)
    assert split.total_s >= split.cpu_s["server"] + split.cpu_s["client"]
    assert split.ms_per(10, "server") == pytest.approx(1000 * split.cpu_s["server"] / 10)


def test_a_child_the_client_waited_for_counts_as_the_clients_as_wrk_does():
    watch = cpu_split.Watch(server_pid=None)  # no server: nothing is the server's
    watch.start()
    subprocess.run(
        [sys.executable, "-c", f"import time\nt = time.process_time()\n"
         f"while time.process_time() - t < {BURN_S}: pass"],
        check=True,
    )  # fmt: skip
    split = watch.stop()

    assert split.cpu_s["server"] == 0
    assert split.cpu_s["client"] == pytest.approx(BURN_S, abs=TOLERANCE_S + 0.1)


def test_a_window_is_read_between_its_two_moments_from_its_own_thread(serve):
    server = serve(3 * BURN_S)  # burning before, through and after the window
    now = time.perf_counter()
    window = cpu_split.Watch(server.pid).between(now + 0.2, now + 0.2 + BURN_S)
    split = window.split()

    assert split.seconds == pytest.approx(BURN_S, abs=0.1)
    # The window's part of the burn alone: at most one core for its length, of three times that.
    assert 0 < split.cpu_s["server"] <= split.seconds + 0.05
