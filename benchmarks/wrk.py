"""HTTP load from `wrk` (a C load generator: no Python interpreter per request, so the client takes
little of the cores it shares with the server it measures).

Each run writes a small Lua script that walks a list of prepared requests (each thread from its
own offset) and prints wrk's figures as one JSON line, which `run` parses.
"""

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

WRK = "wrk"

_SCRIPT = """
local requests = {%(requests)s}
local i = 0
local n = 0
setup = function(thread)
  n = n + 1
  thread:set("offset", n * 7919)
end
init = function(args)
  i = offset or 0
end
request = function()
  i = i + 1
  local r = requests[(i %% #requests) + 1]
  return wrk.format(r[1], r[2], r[3], r[4])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, '
    .. '"p50_ms": %%.3f, "p99_ms": %%.3f, "max_ms": %%.3f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


@dataclass
class Result:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def mean(*runs: Result) -> Result:
    """The runs as one: their requests over their seconds, errors summed, latencies averaged."""
    return Result(
        requests=sum(r.requests for r in runs),
        seconds=sum(r.seconds for r in runs),
        errors=sum(r.errors for r in runs),
        p50_ms=sum(r.p50_ms for r in runs) / len(runs),
        p99_ms=sum(r.p99_ms for r in runs) / len(runs),
    )


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string for this ASCII content


def _lua_request(method: str, path: str, body: str | None) -> str:
    headers = '{["Content-Type"] = "application/json"}' if body is not None else "nil"
    body_lua = _lua_string(body) if body is not None else "nil"
    return f"{{{_lua_string(method)}, {_lua_string(path)}, {headers}, {body_lua}}}"


def available() -> bool:
    """Whether wrk is installed."""
    return shutil.which(WRK) is not None


def run(
    base: str,
    requests: list[tuple[str, str, str | None]],
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> Result:
    """Load base with (method, path, JSON body or None) requests in turn; return the figures."""
    script = _SCRIPT % {"requests": ",\n".join(_lua_request(*r) for r in requests)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                f.name,
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    return Result(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["status_errors"] + data["socket_errors"],
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
    )
