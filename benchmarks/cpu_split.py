"""Where the machine's cores went while a measured row of `make load` ran: the CPU time of the
server under load, PostgreSQL, Redis and the load client, and what the host took.

`make load`'s rates are set by CPU: the servers' workers, PostgreSQL, Redis and the client share
the machine's cores. A row's rate is how many of its requests the cores finish a second, so each
request's cost in CPU, split by who spent it, says what a faster request path could gain (the
server's share) and what it cannot (PostgreSQL's, the client's). The operating system's counters
(read with psutil) are taken as the row starts and as it ends:

- **server**: the uvicorn process under load and its workers;
- **PostgreSQL**: every `postgres` process (the backends of every pool, and the background
  writers: a commit's WAL is written there), those that ended within the row included;
- **Redis**: `redis-server`;
- **client**: this process (a race's asyncio clients and its helper thread) and the children it
  waited for meanwhile (wrk);
- **rest**: the machine's busy time beyond those (the kernel's own threads, the other server,
  any other process);
- **stolen**: time the host gave to other machines while this one had work (a virtual machine's
  steal time), which no process here spent and every rate here lost.
"""

import threading
import time
from dataclasses import dataclass

import psutil

PARTS = ("server", "PostgreSQL", "Redis", "client", "rest")


def _busy(t) -> float:
    """The machine's busy CPU seconds (every core, since boot), stolen time apart."""
    return t.user + t.nice + t.system + t.irq + t.softirq


@dataclass(frozen=True)
class Split:
    """The CPU seconds each part spent over `seconds` of wall time, and the seconds stolen."""

    seconds: float
    cpu_s: dict[str, float]
    stolen_s: float

    @property
    def total_s(self) -> float:
        return sum(self.cpu_s.values())

    def cores(self) -> float:
        """How many cores were busy on average (all parts)."""
        return self.total_s / self.seconds if self.seconds else 0.0

    def ms_per(self, requests: int, part: str | None = None) -> float:
        """CPU milliseconds per request: one part's, or all parts' together."""
        spent = self.total_s if part is None else self.cpu_s[part]
        return 1000 * spent / requests if requests else 0.0

    def stolen_ms_per(self, requests: int) -> float:
        return 1000 * self.stolen_s / requests if requests else 0.0


@dataclass(frozen=True)
class _Process:
    part: str
    own_s: float  # its own CPU seconds since it started
    reaped_s: float  # its children's, those it waited for


@dataclass(frozen=True)
class _Counters:
    at: float
    # By (pid, start time): a pid the system reuses within a row is another process.
    processes: dict[tuple[int, float], _Process]
    client_s: float
    busy_s: float
    stolen_s: float


class Watch:
    """Read the counters of the server started as `server_pid` (its workers are its children;
    None: no server) and of everything else on the machine, at `start` and at `stop`."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._started: _Counters | None = None

    def _part(self, proc: psutil.Process, server: set[int]) -> str | None:
        if proc.pid in server:
            return "server"
        name = proc.info["name"] or ""
        if name == "postgres":
            return "PostgreSQL"
        if name.startswith("redis-server"):
            return "Redis"
        return None

    def _read(self) -> _Counters:
        server: set[int] = set()
        if self.server_pid is not None:
            try:
                root = psutil.Process(self.server_pid)
                server = {self.server_pid, *(p.pid for p in root.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass  # ended: its time is the rest's
        processes = {}
        for proc in psutil.process_iter(["name", "cpu_times", "create_time"]):
            part = self._part(proc, server)
            times = proc.info["cpu_times"]
            if part is not None and times is not None:
                processes[(proc.pid, proc.info["create_time"])] = _Process(
                    part,
                    own_s=times.user + times.system,
                    reaped_s=times.children_user + times.children_system,
                )
        me = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        return _Counters(
            at=time.perf_counter(),
            processes=processes,
            # Its own time and that of the children it waited for (wrk, once it exits).
            client_s=me.user + me.system + me.children_user + me.children_system,
            busy_s=_busy(machine),
            stolen_s=machine.steal,
        )

    def start(self) -> None:
        self._started = self._read()

    def stop(self) -> Split:
        """The split since `start`.

        A process that started within the row spent all its time in it. One that ended within
        it (a backend whose connection closed, an autovacuum worker, a worker restarted) is
        counted through the parent that waited for it (PostgreSQL's postmaster, the server's
        supervisor): the parent's children's time grew by the whole of the ended one's, of
        which the part spent before the row is taken off again."""
        if self._started is None:
            raise RuntimeError("Watch.stop before Watch.start")
        before, after = self._started, self._read()
        cpu = dict.fromkeys(PARTS, 0.0)
        for key, now in after.processes.items():
            was = before.processes.get(key)
            if was is None:
                cpu[now.part] += now.own_s + now.reaped_s
            else:
                cpu[now.part] += (now.own_s - was.own_s) + (now.reaped_s - was.reaped_s)
        for key, was in before.processes.items():
            if key not in after.processes:
                cpu[was.part] -= was.own_s
        cpu["client"] = after.client_s - before.client_s
        # Never below nothing: the counters are read one process at a time, not all at once.
        cpu["rest"] = max(0.0, (after.busy_s - before.busy_s) - sum(cpu.values()))
        return Split(
            seconds=after.at - before.at, cpu_s=cpu, stolen_s=after.stolen_s - before.stolen_s
        )

    def between(self, start_at: float, stop_at: float) -> "Window":
        """Start and stop at two moments of `time.perf_counter()` (a race's timed phase), from
        a thread of its own while the race runs."""
        return Window(self, start_at, stop_at)


class Window:
    """A watch started and stopped by a thread at two given moments; `split()` waits for it."""

    def __init__(self, watch: Watch, start_at: float, stop_at: float) -> None:
        self._split: Split | None = None

        def run() -> None:
            time.sleep(max(0.0, start_at - time.perf_counter()))
            watch.start()
            time.sleep(max(0.0, stop_at - time.perf_counter()))
            self._split = watch.stop()

        self._thread = threading.Thread(target=run, name="cpu-split", daemon=True)
        self._thread.start()

    def split(self) -> Split:
        self._thread.join()
        if self._split is None:
            raise RuntimeError("the window's thread failed; see its traceback above")
        return self._split
