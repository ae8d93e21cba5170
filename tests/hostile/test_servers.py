"""Issue 14, item 10: background Prefect servers, one per home, found again, stopped when idle.

Each test runs `weflow` in fresh folders with no ``PREFECT_API_URL``, so weflow starts its own
local servers; processes are counted from /proc here (not through ``weflow.prefect_gateway.server``), and every
process a test leaves is killed by pid in ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, descendants, eventually, web, weflow_exe, zombie
from weflow import config, workflows
from weflow.prefect_gateway import server, supervisor
from weflow.workflows import Scope

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "description": "one small file, filtered",
    "nodes": [
        {"name": "rows", "type": "read_csv", "config": {"path": "rows.csv"}},
        {"name": "big", "type": "filter", "config": {"condition": "n > 1"}},
    ],
    "connections": [{"from": "rows", "to": "big"}],
}


SERVER = re.compile(r"(^|/)(prefect|prefect_server\.py) server start( |$)")  # a Prefect server's command line


def is_server(argv: str) -> bool:
    """A Prefect server: ``prefect server start``, or weflow's launcher of it (``prefect_server.py server start``)."""
    return SERVER.search(argv) is not None


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


def homes_served(homes: set[Path]) -> dict[int, tuple[str, str]]:
    """pid -> (home, command line) of every live process whose PREFECT_HOME is one of ``homes``, but weflow's own
    clients: Prefect servers and the supervisors weflow starts them under."""
    wanted = {str(h.resolve()) for h in homes}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = _environ(int(entry.name))
        except OSError:
            continue
        home = env.get("PREFECT_HOME", "")
        if home in wanted and (is_server(argv) or "supervisor.py" in argv):
            found[int(entry.name)] = (home, argv)
    return found


def serving(homes: set[Path]) -> dict[int, str]:
    """pid -> command line of the Prefect servers and supervisors of ``homes`` (``homes_served``)."""
    return {pid: argv for pid, (_, argv) in homes_served(homes).items()}


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def prefect_servers(homes: set[Path]) -> dict[int, str]:
    """pid -> command line of the Prefect servers of ``homes``, not counting a server's own child between its fork
    and its exec, which still shows the server's command line: Prefect's server forks ``file -b python`` as it
    imports croniter (``platform.architecture``), and CI once counted that child as a second server."""
    found = {pid: argv for pid, argv in serving(homes).items() if is_server(argv)}
    return {pid: argv for pid, argv in found.items() if _parent(pid) not in found}


def kill_all(homes: set[Path]) -> None:
    for pid in serving(homes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def folder_env(**extra: str) -> dict[str, str]:
    """The environment of a user in a folder of their own: weflow picks its local server there."""
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_HOME"}}
    for key in [k for k in env if k.startswith("WEFLOW_")]:
        del env[key]
    env.update(PYTHONPATH=str(REPO), COLUMNS="200", **extra)
    return env


def projects(*folders: Path) -> list[Path]:
    """``folders`` in the README's layout with the tiny workflow applied (catalog data/weflow.duckdb).

    Applied in this process with the settings `weflow apply` has in such a folder (the folder's catalog,
    the folder as data root, organization ``default``, user ``admin``): ten `weflow apply` processes
    cost ~2 s of CPU each, and the tests are about the runs.
    """
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rows.csv").write_text("n\n1\n2\n3\n")
        (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
        in_folder = config.using(
            catalog=folder / "data" / "weflow.duckdb", organization="default", user="admin",
            data_roots=(folder.resolve(),), runs_dir=folder / "data" / "runs", python_node_modules=(),
            shared_data_roots=False, prefect_home=None,
        )  # fmt: skip
        with in_folder:
            workflows.apply(workflows.parse_file(folder / "tiny.yaml"), Scope.current())
    return list(folders)


def launch(folder: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [weflow_exe(), *args], cwd=folder, env=folder_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(procs: list[subprocess.Popen[str]], seconds: float = 240) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds)
        results.append((proc.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def migrated_db(prefect_api: str) -> Path:
    """A Prefect database already migrated (a fresh one costs ~12 s of one core per server start): the one the
    session's server keeps as the template (``prefect_api``; the subprocesses here do not see its variable)."""
    template = Path(os.environ["WEFLOW_PREFECT_DB_TEMPLATE"])
    assert template.is_file(), template
    return template


@contextmanager
def client_of(home: Path) -> Iterator[None]:
    """This process counts as a weflow client of ``home``'s server for the block, as a notebook does."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(0.2):
            supervisor.touch(home)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join()


def test_first_runs_at_once_share_one_server_and_servers_stop_when_idle_not_under_a_run(
    tmp_path: Path, migrated_db: Path
) -> None:
    """Three `weflow run` started together, one in a fresh folder ``a``, two in ``b``: one server per home,
    three successes; once idle both servers stop, ``b``'s only after a flow run active on it ended.

    Before: runs at once in a folder each saw no server, each started one on the same SQLite database, and one
    run failed; and every folder's first run started a server that never stopped (23 test folders, 23 servers).
    The homes hold a migrated Prefect database and no server; the idle period is 3 s. The test is a client of
    ``b`` until its flow run is there, so ``b``'s server cannot idle-stop between the runs and the count after them.
    (One test for the three behaviours: each server start and `weflow run` process costs seconds of CPU.)
    """
    idle = 3
    a, b = projects(tmp_path / "a", tmp_path / "b")
    home = {a: a / "data" / "prefect", b: b / "data" / "prefect"}
    for each in home.values():
        each.mkdir(parents=True)
        shutil.copy(migrated_db, each / "prefect.db")
    try:
        with client_of(home[b]):  # b's server stays until the test put its active flow run there
            procs = {f: [launch(f, "run", "tiny", WEFLOW_SERVER_IDLE_SECONDS=str(idle)) for _ in range(n)]
                     for f, n in ((a, 1), (b, 2))}  # fmt: skip
            peak: dict[str, set[int]] = {str(h.resolve()): set() for h in home.values()}
            while any(p.poll() is None for p in procs[a] + procs[b]):  # count while they run, not only after
                for each in home.values():
                    peak[str(each.resolve())] |= set(prefect_servers({each}))
                time.sleep(0.2)
            results = finish(procs[a] + procs[b])
            # a's 3 s idle period did not stop its server under a run that took longer than that
            assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
            assert all("SUCCEEDED" in out for _, out, _ in results), results
            for folder in (a, b):
                assert len(peak[str(home[folder].resolve())]) == 1, peak
                log = (home[folder] / "server.log").read_text()
                assert log.count("starting a Prefect server") == 1, log
            assert len(prefect_servers({home[b]})) == 1  # the two runs at once left their one server running
            record = supervisor.read_record(home[b])
            assert record is not None
            api = record["api_url"]
            flow = web.post(f"{api}/flows/", json={"name": "elsewhere"}).json()
            running = {"type": "RUNNING", "name": "Running"}
            run = web.post(f"{api}/flow_runs/", json={"flow_id": flow["id"], "state": running}).json()
        no_client = time.monotonic()
        deadline = no_client + 60
        while serving({home[a]}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert serving({home[a]}) == {}
        time.sleep(max(0.0, no_client + 3 * idle - time.monotonic()))  # three idle periods without a client
        assert len(prefect_servers({home[b]})) == 1, "stopped under a running flow run"
        done = {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True}
        assert web.post(f"{api}/flow_runs/{run['id']}/set_state", json=done).status_code in {200, 201}
        deadline = time.monotonic() + 60
        while serving({home[b]}) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert serving({home[b]}) == {}
        for each in home.values():
            assert not (each / "weflow-server.json").exists()
            log = (each / "server.log").read_text()
            assert f"no weflow client for {idle} s and no active flow run: stopping" in log, log
            assert "the Prefect server exited with code" not in log, log
    finally:
        for each in home.values():
            server.stop(each)
        kill_all(set(home.values()))
    assert serving(set(home.values())) == {}


def test_stop_finds_every_server_of_the_home(tmp_path: Path, migrated_db: Path) -> None:
    """Two servers in one home (a stale record, one started by hand): `status` lists both, `stop` ends both.

    Before: `weflow server stop` stopped only the recorded server; `status` showed only that one.
    The home is ``$PREFECT_HOME``, which weflow used to replace with ``./data/prefect``.
    """
    folder = tmp_path / "work"
    folder.mkdir()
    home = tmp_path / "my-prefect-home"
    home.mkdir()
    shutil.copy(migrated_db, home / "prefect.db")
    by_hand = None
    try:
        port = server._free_port(0)
        by_hand = subprocess.Popen(
            [str(Path(weflow_exe()).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port",
             str(port)],
            env={**folder_env(), "PREFECT_HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        # the command a user runs: weflow finds the hand-started server through the home, records and reuses it
        started = launch(folder, "server", "start", PREFECT_HOME=str(home))
        [(code, out, err)] = finish([started])
        assert code == 0, err
        assert not (folder / "data").exists(), "weflow replaced PREFECT_HOME with ./data/prefect"
        assert len(prefect_servers({home})) == 1, "a second server was started for a home that has one"
        # then a stale record: weflow starts a second server under its supervisor and forgets the first
        (home / "weflow-server.json").unlink()
        second = server.start(home, port=0, timeout=120, quiet=True)
        assert len(prefect_servers({home})) == 2
        [(code, out, err)] = finish([launch(folder, "server", "status", PREFECT_HOME=str(home))])
        assert code == 0, err
        assert f"pid {by_hand.pid}:" in out and f"pid {second.pid}:" in out, out
        assert "not recorded in the home" in out and "runs until stopped" in out, out
        [(code, out, err)] = finish([launch(folder, "server", "stop", PREFECT_HOME=str(home))])
        assert code == 0, err
        assert str(by_hand.pid) in out and str(second.pid) in out, out
        assert serving({home}) == {}
        assert by_hand.wait(timeout=10) is not None
        assert not (home / "weflow-server.json").exists()
        [(code, out, err)] = finish([launch(folder, "server", "status", PREFECT_HOME=str(home))])
        assert code == 1 and "no local Prefect server is running" in err, (code, out, err)
    finally:
        if by_hand is not None and by_hand.poll() is None:
            os.killpg(by_hand.pid, signal.SIGKILL)
            by_hand.wait()
        server.stop(home)
        kill_all({home})


def implicit_server(tmp_path: Path, migrated_db: Path, idle: int) -> tuple[Path, Path, str]:
    """A home (from the migrated database) whose server a command started implicitly: (folder, home, API URL)."""
    folder = tmp_path / "work"
    home = folder / "data" / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_db, home / "prefect.db")
    started = subprocess.run(
        [str(Path(weflow_exe()).with_name("python")), "-c",
         "from weflow.prefect_gateway import server; print(server.ensure(quiet=True).api_url)"],
        cwd=folder, env=folder_env(WEFLOW_SERVER_IDLE_SECONDS=str(idle)), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    return folder, home, started.stdout.strip()


def test_server_start_keeps_an_implicit_server(tmp_path: Path, migrated_db: Path) -> None:
    """`weflow server start` on a home whose server a command started implicitly turns its idle stop off.

    The test is a client until `weflow server start` returned (a CLI call may take longer than the idle
    period on a loaded machine), then none: an implicit server would stop ``IDLE`` s after that.
    """
    IDLE = 3
    home = tmp_path / "work" / "data" / "prefect"
    home.mkdir(parents=True)
    try:
        with client_of(home):
            folder, _, _ = implicit_server(tmp_path, migrated_db, IDLE)
            [(code, out, err)] = finish([launch(folder, "server", "status")])
            assert code == 0 and f"started implicitly, stops after {IDLE} s idle" in out, (out, err)
            [(code, out, err)] = finish([launch(folder, "server", "start")])
            assert code == 0, err
        time.sleep(IDLE + 4)  # past the idle period and the supervisor's next checks (every IDLE / 4 s)
        [(code, out, err)] = finish([launch(folder, "server", "status")])
        assert code == 0 and "(answers); runs until stopped" in out, (out, err)
        assert len(prefect_servers({home})) == 1
    finally:
        server.stop(home)
        kill_all({home})
    assert serving({home}) == {}


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_weflow_up_ended_by_a_signal_leaves_none_of_its_server_and_workers(
    tmp_path: Path, migrated_db: Path, how: signal.Signals
) -> None:
    """`weflow up` ended by SIGTERM (a service manager, `docker stop`, `kill`) stops what it started, as Ctrl-C
    does: the server, the weflow worker and the node worker. Killed outright (SIGKILL, the OOM killer), it can do
    nothing; what it started sees it gone and stops by itself. (SIGHUP, a closed terminal, takes SIGTERM's
    handler; a third `weflow up` to send it would cost ~10 s of CPU.)

    Before: only Ctrl-C did; SIGTERM ended `weflow up` alone and left the three running, and so did SIGKILL.
    The server's owner watch is also what stops a killed test session's servers (``prefect_api``).
    """
    [folder] = projects(tmp_path / "stack")
    home = folder / "data" / "prefect"
    home.mkdir(parents=True)
    shutil.copy(migrated_db, home / "prefect.db")
    up = launch(folder, "up", "--port", "0")
    started: set[int] = set()
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:  # blocks until `weflow up` says it runs (or exits)
            lines.append(line)
            if line.startswith("running;"):
                break
        assert lines and lines[-1].startswith("running;"), "".join(lines) + up.stderr.read()  # type: ignore[union-attr]

        def stack() -> set[int] | None:  # once the weflow worker's child runs too
            found = descendants(up.pid)
            commands = " ".join(_cmdline(p) for p in found)
            wanted = ("prefect_server.py server start", "weflow worker", "weflow node-worker", "-m weflow.workers")
            return found if all(w in commands for w in wanted) else None

        found = eventually(stack, 60)
        assert isinstance(found, set)
        started = found
        up.send_signal(how)
        out, err = up.communicate(timeout=120)
        if how == signal.SIGTERM:
            assert up.returncode == 0, err
            assert "stopping ..." in out
        else:
            assert up.returncode == -signal.SIGKILL

        def left() -> list[int]:
            return [p for p in started if Path(f"/proc/{p}").exists() and not zombie(p)]

        deadline = time.monotonic() + (60 if how == signal.SIGKILL else 0)
        while left() and time.monotonic() < deadline:  # killed: each notices by itself (the worker's grace period)
            time.sleep(0.5)
        assert left() == [], f"left running after `weflow up` ended: {[_cmdline(p) for p in left()]}"
        assert serving({home}) == {}
        if how == signal.SIGKILL:
            assert f"its owner, process {up.pid}, ended" in (home / "server.log").read_text()
    finally:
        if up.poll() is None:
            up.kill()
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_all({home})


def _cmdline(pid: int) -> str:
    """The command line, space-separated, each absolute path as its last part (``prefect_server.py``, ``weflow``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    return " ".join(Path(a).name if a.startswith("/") else a for a in argv)
