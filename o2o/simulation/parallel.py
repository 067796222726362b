"""Each policy's day in a process and a database of its own, at the same time.

The policies share nothing but the plan (drawn from the same seed in every process), so
`make simulate` replays them side by side: scripts/simulate.sh creates one `_sim` database per
policy and names them in O2O_SIM_POLICY_DATABASES; each child process runs one policy against
its own database and hands its result back as a pickle.

Usage of the child (internal): python -m o2o.simulation.parallel OPTIONS_JSON POLICY OUT_FILE
"""

import json
import os
import pickle
import subprocess
import sys
import tempfile
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


def run_all(options, policies: tuple[str, ...], base_url: str) -> list:
    """Run each policy in its own process on its own database; return results in order."""
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for policy in policies:
            out = Path(tmp) / f"{policy}.pickle"
            env = os.environ | {"O2O_DATABASE_URL": policy_database(base_url, policy)}
            children.append(
                (
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
        results = []
        for out, child in children:
            if child.wait() != 0:
                raise RuntimeError(f"a policy's simulation failed (exit {child.returncode})")
            results.append(pickle.loads(out.read_bytes()))
        return results


def _child(options_json: str, policy: str, out: str) -> None:
    from o2o import wiring
    from o2o.simulation.day import Options
    from o2o.simulation.run import simulate

    wiring.connect()
    options = Options(**json.loads(options_json))
    (result,) = simulate(options, policies=(policy,), progress=False)
    Path(out).write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
