"""The notebook-facing API: short functions over the services, acting as the current user.

Each function takes an optional ``catalog`` (a path or Catalog); by default the one from the
environment (``WEFLOW_CATALOG``, else ``data/weflow.duckdb``) with ``WEFLOW_ORG``/``WEFLOW_USER``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from weflow import column_lineage, workflows
from weflow.column_lineage import Lineage
from weflow.core.builder import WorkflowBuilder
from weflow.core.diff import DefinitionDiff
from weflow.core.entities import Version, Workflow
from weflow.core.model import Definition
from weflow.errors import DefinitionError
from weflow.workflows import Catalog, SaveResult, Scope

if TYPE_CHECKING:  # importing Prefect costs ~1.5 s; only runs need it
    import polars as pl

    from weflow.core.entities import Execution
    from weflow.data_diff import DataDiff
    from weflow.deploy import Deployed
    from weflow.execution import RunResult
    from weflow.samples import PinStatus, SamplesRun

CatalogLike = Catalog | str | Path | None


def _scope(catalog: CatalogLike) -> Scope:
    return Scope.current(catalog)


def _definition(item: Definition | WorkflowBuilder) -> Definition:
    return item.build() if isinstance(item, WorkflowBuilder) else item


def save(item: Definition | WorkflowBuilder, message: str = "", catalog: CatalogLike = None) -> SaveResult:
    """Check and store a definition (or a builder); a new version only if it changed."""
    return workflows.apply(_definition(item), _scope(catalog), message)


def load(name: str, version: int | None = None, catalog: CatalogLike = None) -> Definition:
    """The definition of a stored version (the current one by default)."""
    return workflows.version(name, _scope(catalog), version).definition


def list_workflows(status: str | None = None, catalog: CatalogLike = None) -> list[Workflow]:
    return workflows.list_workflows(_scope(catalog), status)


def versions(name: str, catalog: CatalogLike = None) -> list[Version]:
    return workflows.versions(name, _scope(catalog))


@overload
def diff(name: str, a: int, b: int, catalog: CatalogLike = None) -> DefinitionDiff: ...


@overload
def diff(
    name: str, a: int, b: int, catalog: CatalogLike = None, *, data: Literal[True], key: Sequence[str] | None = None,
    rows: int | None = None, samples: bool = False,
) -> DataDiff: ...  # fmt: skip


def diff(
    name: str, a: int, b: int, catalog: CatalogLike = None, *, data: bool = False, key: Sequence[str] | None = None,
    rows: int | None = None, samples: bool = False,
) -> DefinitionDiff | DataDiff:  # fmt: skip
    """What changed from version ``a`` to ``b``: the definition, or with ``data=True`` what each node outputs
    differently when both run on the first ``rows`` rows of each source or on the pinned ``samples`` (rows
    matched on ``key``); a data diff shows as tables."""
    if not data:
        return workflows.diff(name, a, b, _scope(catalog))
    from weflow.data_diff.runner import for_versions

    return for_versions(name, a, b, _scope(catalog), key=key, rows=rows, samples=samples)


def rollback(name: str, version: int, message: str = "", catalog: CatalogLike = None) -> SaveResult:
    return workflows.rollback(name, version, _scope(catalog), message)


def delete(name: str, purge: bool = False, catalog: CatalogLike = None) -> None:
    workflows.delete(name, _scope(catalog), purge=purge)


def export(name: str, version: int | None = None, catalog: CatalogLike = None) -> dict[str, Any]:
    return workflows.export(name, _scope(catalog), version)


def lineage(name: str, version: int | None = None, catalog: CatalogLike = None) -> Lineage:
    """Column lineage of a stored version: shows as a Mermaid graph; ``.sources("node.column")`` asks one column."""
    return column_lineage.for_workflow(name, _scope(catalog), version)


def run(
    name: str,
    input_data: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    timeout: float | None = None,
    persist: bool = False,
    catalog: CatalogLike = None,
) -> RunResult:
    """Run a stored workflow in the kernel on the local Prefect server; returns its frames."""
    from weflow import execution

    return execution.run(
        name, _scope(catalog), input_data=input_data, timeout=timeout, version_number=version, persist=persist
    )


def preview(
    item: Definition | WorkflowBuilder,
    node: str,
    n: int = 20,
    input_data: Mapping[str, Any] | None = None,
    *,
    samples: bool = False,
    catalog: CatalogLike = None,
) -> pl.DataFrame:
    """Run ``node`` and its upstream only, sources capped at ``n`` rows; nothing is recorded.

    ``samples=True``: the sources read the pinned samples of the stored workflow of the same name instead
    (``pin_samples``), in this process; a source without a pin, or changed since, is one error naming it.
    """
    if samples:
        from weflow import samples as pinned

        d = _definition(item)
        done = pinned.run_on_pins(d.name, _scope(catalog), node=node, input_data=input_data, definition=d)
        if not done.ok:
            raise DefinitionError([("", f"preview on pinned samples failed at {done.result.error_node!r}: "
                                        f"{done.result.error}")], workflow=d.name)  # fmt: skip
        return done[node].head(n)
    from weflow import execution

    return execution.preview(_definition(item), node, n, input_data)


def pin_samples(
    name: str, rows: int = 100, from_execution: str | None = None, node: str | None = None, catalog: CatalogLike = None
) -> list[PinStatus]:
    """Pin the first ``rows`` rows of each source of ``name`` (a bounded read, or a run's kept outputs)."""
    from weflow import samples as pinned

    return pinned.pin(name, _scope(catalog), rows=rows, from_execution=from_execution, node=node)


def pinned_samples(name: str, catalog: CatalogLike = None) -> list[PinStatus]:
    """The sources of ``name``'s current version and their pins (``.stale`` when the source changed since)."""
    from weflow import samples as pinned

    return pinned.status(name, _scope(catalog))


def drop_samples(name: str, node: str | None = None, catalog: CatalogLike = None) -> list[str]:
    from weflow import samples as pinned

    return pinned.drop(name, _scope(catalog), node)


def run_on_samples(
    name: str, input_data: Mapping[str, Any] | None = None, *, version: int | None = None, catalog: CatalogLike = None
) -> SamplesRun:
    """Run a stored workflow on its pinned samples in the kernel: not recorded, no sink written; its frames."""
    from weflow import samples as pinned

    return pinned.run_on_pins(name, _scope(catalog), version=version, input_data=input_data)


def executions(name: str | None = None, limit: int = 100, catalog: CatalogLike = None) -> list[Execution]:
    """Run history, most recent first (the workflow's, or all of the organization's)."""
    from weflow import execution  # importing Prefect costs ~1.5 s; listing needs the execution service

    return execution.executions(_scope(catalog), name, limit=limit)


def deploy_workflows(catalog: CatalogLike = None) -> list[Deployed]:
    """Create or update the Prefect deployment of every ACTIVE/PAUSED workflow (no file to write)."""
    from weflow import deploy as deployments

    return deployments.deploy(_scope(catalog))
