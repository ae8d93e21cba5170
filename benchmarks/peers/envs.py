"""The peers' virtual environments: ``.peers/<name>/`` (git-ignored), one per framework, from PyPI.

Each is built from ``benchmarks/peers/requirements-<name>.txt`` (exact pins, Polars at the
project's version) with the base interpreter of this one, so no peer's dependencies touch
weflow's environment. A built environment holds the hash of its requirements file in
``.installed``; it is rebuilt only when that file changes. ``python -m benchmarks.peers.envs``
builds the missing ones; the benchmark does it too (full mode only: tests never build them).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENVS = REPO / ".peers"
PEERS = ("hamilton", "kedro", "dagster")  # hand-written Prefect and weflow use the project's environment


def requirements(name: str) -> Path:
    return HERE / f"requirements-{name}.txt"


def python(name: str) -> Path:
    """The interpreter a framework's child runs in."""
    if name in ("weflow", "prefect"):
        return Path(sys.executable)
    return ENVS / name / "bin" / "python"


def _digest(name: str) -> str:
    return hashlib.sha256(requirements(name).read_bytes()).hexdigest()


def ready(name: str) -> bool:
    """True if the framework's environment exists and was built from its current requirements file."""
    if name in ("weflow", "prefect"):
        return True
    marker = ENVS / name / ".installed"
    return python(name).exists() and marker.is_file() and marker.read_text().strip() == _digest(name)


def build(name: str) -> None:
    """Create (or refresh) ``.peers/<name>/`` from its requirements file; raises with pip's last lines on failure."""
    env = ENVS / name
    if not python(name).exists():
        base = getattr(sys, "_base_executable", sys.executable)  # the interpreter this venv was made from
        subprocess.run([base, "-m", "venv", str(env)], check=True, capture_output=True)
    done = subprocess.run(
        [str(python(name)), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements(name))],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"building .peers/{name} failed: {done.stderr.strip()[-2000:]}")
    (env / ".installed").write_text(_digest(name) + "\n")


def ensure(names: tuple[str, ...] = PEERS) -> list[str]:
    """Build every missing environment of ``names``; returns the ones that were built."""
    built = [name for name in names if not ready(name)]
    for name in built:
        print(f"building .peers/{name} from {requirements(name).relative_to(REPO)} ...", file=sys.stderr, flush=True)
        build(name)
    return built


if __name__ == "__main__":
    ensure()
