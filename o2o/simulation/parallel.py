"""Each policy's day in a process and a database of its own, at the same time.

The policies share nothing but the plan (drawn from the same seed in every process), so
`make simulate` replays them side by side: scripts/simulate.sh creates one `_sim` database per
policy and names them in O2O_SIM_POLICY_DATABASES; each child process runs one policy against
its own database and hands its result back as a pickle. While they run, each child writes the
simulated minutes it has done to a file of its own, and the parent reports them (`on_progress`).

Usage of the child (internal): python -m o2o.simulation.parallel OPTIONS_JSON POLICY OUT_FILE
(the child writes its progress to OUT_FILE with the suffix .progress)
"""

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sqlalchemy.engine import make_url

ENV = "O2O_SIM_POLICY_DATABASES"


def policy_database(base_url: str, policy: str) -> str:
    """The database URL a policy runs on: `<name>_<policy>_sim` beside the base `<name>_sim`."""
    url = make_url(base_url)
    name = url.database or ""
    stem = name[: -len("_sim")] if name.endswith("_sim") else name
    return url.set(database=f"{stem}_{policy}_sim").render_as_string(hide_password=False)


def available() -> bool:
    """Whether the script made a database for each policy (then policies run in parallel)."""
    return os.environ.get(ENV) == "1"


def _progress_file(out: Path) -> Path:
    return out.with_suffix(".progress")


def _done_minutes(out: Path) -> int:
    try:
        return int(_progress_file(out).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def run_all(
    options,
    policies: tuple[str, ...],
    base_url: str,
    on_progress: Callable[[str, int], None] = lambda policy, minutes: None,
) -> list:
    """Run each policy in its own process on its own database; return results in order.

    `on_progress(policy, minutes)` is told each policy's simulated minutes as they advance.
    """
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for policy in policies:
            out = Path(tmp) / f"{policy}.pickle"
            env = os.environ | {"O2O_DATABASE_URL": policy_database(base_url, policy)}
            children.append(
                (
                    policy,
                    out,
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "o2o.simulation.parallel",
                            json.dumps(asdict(options)),
                            policy,
                            str(out),
                        ],
                        env=env,
                    ),
                )
            )
        while any(child.poll() is None for _, _, child in children):
            for policy, out, _ in children:
                on_progress(policy, _done_minutes(out))
            time.sleep(0.5)
        results = []
        for policy, out, child in children:
            on_progress(policy, _done_minutes(out))
            if child.returncode != 0:
                raise RuntimeError(f"a policy's simulation failed (exit {child.returncode})")
            results.append(pickle.loads(out.read_bytes()))
        return results


def _child(options_json: str, policy: str, out: str) -> None:
    from o2o import wiring
    from o2o.simulation.day import Options
    from o2o.simulation.run import simulate

    wiring.connect()
    options = Options(**json.loads(options_json))
    progress = _progress_file(Path(out))
    (result,) = simulate(
        options,
        policies=(policy,),
        on_progress=lambda _policy, minutes: progress.write_text(str(minutes)),
    )
    Path(out).write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
