"""Steps on Dask through prefect-dask: a fan-out on a local cluster gives the in-process answer.

Real parts: the session's Prefect server, a Dask ``LocalCluster`` of two worker processes started
by prefect-dask's ``DaskTaskRunner``, frames handed over as Parquet files.
"""

from __future__ import annotations

import os

import pytest
from polars.testing import assert_frame_equal

from weflow import execution, parse, workflows
from weflow.core.entities import RunState
from weflow.errors import DefinitionError
from weflow.workflows import Scope

from .test_node_queue import FANOUT

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_a_fan_out_on_a_local_dask_cluster_gives_the_in_process_answer(
    scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEFLOW_DASK_WORKERS", "2")
    text = FANOUT.replace("node_queue: true", "dask: local").replace("seconds: 2", "seconds: 0")
    workflows.apply(parse(text), scope)
    on_dask = execution.run("spread", scope)
    assert on_dask.ok, on_dask.execution.error_message
    in_process = execution.execute(parse(text), on_dask.execution, dask=None, node_queue=False)
    assert in_process.ok

    pids = set(on_dask["by_region"]["pid"].to_list()) | set(on_dask["by_status"]["pid"].to_list())
    assert os.getpid() not in pids  # the python nodes ran in Dask worker processes
    for name, keys in (("by_region", ["region"]), ("by_status", ["status"])):
        assert_frame_equal(on_dask[name].drop("pid").sort(keys), in_process[name].drop("pid").sort(keys))
    recorded = {n.node: n for n in scope.catalog.execution(on_dask.execution.id).nodes}
    assert {n.status for n in recorded.values()} == {RunState.SUCCEEDED}
    assert recorded["by_status"].rows_out == on_dask["by_status"].height


def test_a_dask_address_must_be_local_or_a_scheduler_url(scope: Scope) -> None:
    with pytest.raises(DefinitionError, match=r"settings\.dask"):
        workflows.apply(parse(FANOUT.replace("node_queue: true", "dask: 'http://evil'")), scope)
