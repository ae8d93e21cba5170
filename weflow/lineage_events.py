"""OpenLineage run events of weflow runs, sent to ``WEFLOW_OPENLINEAGE_URL`` (Marquez or any consumer).

A run that begins emits START, one that ends COMPLETE (succeeded), ABORT (cancelled) or FAIL, each
with the run's input datasets (its sources: files in namespace ``file``, DuckDB tables, JSON APIs)
and output datasets (its sinks), their schema facets and, on the outputs, the column-lineage
facet from ``weflow.column_lineage``. Events go from one background thread per process, in
order, through openlineage-python's ``HttpTransport``: the run never waits for them and never
fails because of them. With the setting unset nothing is imported, computed or sent.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlglot
from sqlglot import exp

from weflow import column_lineage
from weflow.column_lineage import Lineage, Ref
from weflow.config import settings
from weflow.core.entities import Execution, RunState
from weflow.core.model import Definition, Node
from weflow.nodes.base import resolve_files, resolve_path
from weflow.nodes.registry import node_types

if TYPE_CHECKING:  # both cost imports (Prefect ~1.5 s, OpenLineage ~0.27 s) this module does not need
    from openlineage.client import OpenLineageClient

    from weflow.engine.runtime import RunSpec

log = logging.getLogger("weflow.openlineage")
PRODUCER = "https://github.com/weconnect/weflow"
DIRECT_ORDER = ("IDENTITY", "TRANSFORMATION", "AGGREGATION")  # a path is as strong as its strongest hop
Dataset = tuple[str, str]  # (namespace, name)

_sender: dict[str, tuple[OpenLineageClient, ThreadPoolExecutor]] = {}
_lineages: dict[str, Lineage | None] = {}  # execution id -> its START's lineage, reused by its end event


def started(definition: Definition, execution: Execution, spec: RunSpec) -> Future[None] | None:
    """Queue the START event of a run that began; None when no endpoint is set or for a preview."""
    return _queue(definition, execution, spec, start=True)


def ended(definition: Definition, execution: Execution, spec: RunSpec) -> Future[None] | None:
    """Queue the COMPLETE or FAIL event of a run whose record was written; None when not sent."""
    return _queue(definition, execution, spec, start=False)


def _queue(definition: Definition, execution: Execution, spec: RunSpec, start: bool) -> Future[None] | None:
    url = settings().openlineage_url
    if not url or spec.limit is not None:  # a preview reads capped sources and writes nothing: not a run
        return None
    client, thread = _client(url)
    context = contextvars.copy_context()  # the caller's settings (``config.using``) hold in the thread too
    return thread.submit(context.run, _send, client, definition, execution, spec.data_roots, start)


def _client(url: str) -> tuple[OpenLineageClient, ThreadPoolExecutor]:
    if url not in _sender:
        from openlineage.client import OpenLineageClient  # ~0.27 s: paid only when events are on
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        transport = HttpTransport(HttpConfig(url=url, timeout=5.0, retry={"total": 2, "backoff_factor": 0.2}))
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weflow-openlineage")
        _sender[url] = (OpenLineageClient(transport=transport, config={}), thread)
        atexit.register(thread.shutdown, wait=True)  # a CLI run's last events still go out
    return _sender[url]


def _send(
    client: OpenLineageClient, definition: Definition, execution: Execution, roots: tuple[Path, ...], start: bool
) -> None:
    try:
        lineage = _lineage(definition, execution, roots, start)
        client.emit(event(definition, execution, roots, lineage, start))
    except Exception as exc:  # a consumer down or a source unreadable must never touch the run
        log.warning("OpenLineage event of %s not sent: %s", execution.id, exc)


def _lineage(definition: Definition, execution: Execution, roots: tuple[Path, ...], start: bool) -> Lineage | None:
    if not start and execution.id in _lineages:
        return _lineages.pop(execution.id)
    try:
        found: Lineage | None = column_lineage.of(definition, roots, execution.version)
    except Exception as exc:  # e.g. SQL sqlglot cannot read: events still name the datasets
        log.warning("column lineage of %s unknown: %s", definition.name, exc)
        found = None
    if start:
        _lineages[execution.id] = found
    return found


def event(
    definition: Definition, execution: Execution, roots: tuple[Path, ...], lineage: Lineage | None, start: bool
) -> Any:
    """The OpenLineage ``RunEvent`` of a run's start (or end, from its final record)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
    from openlineage.client.event_v2 import RunState as OLState
    from openlineage.client.facet_v2 import error_message_run, job_type_job

    ok = execution.status is RunState.SUCCEEDED
    ends = {RunState.SUCCEEDED: OLState.COMPLETE, RunState.CANCELLED: OLState.ABORT}
    state = OLState.START if start else ends.get(execution.status, OLState.FAIL)
    run_facets: dict[str, Any] = {}
    if not start and not ok:
        message = execution.error_message or execution.status.value
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python"
        )
    datasets = _datasets(definition, roots)
    kinds = {n.name: node_types()[n.type].kind for n in definition.nodes}
    inputs = [
        InputDataset(ns, name, facets=_schema_facet(lineage, node))
        for node, (ns, name) in datasets.items()
        if kinds[node] == "source"
    ]
    outputs = [
        OutputDataset(ns, name, facets={**_schema_facet(lineage, node), **_column_facet(lineage, node, datasets)})
        for node, (ns, name) in datasets.items()
        if kinds[node] == "sink"
    ]
    job = Job(
        namespace=f"weflow/{settings().organization}",
        name=definition.name,
        facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="WEFLOW", jobType="WORKFLOW")
        },
    )
    when = (execution.started_at if start else execution.finished_at) or datetime.now(UTC)
    return RunEvent(
        eventType=state,
        eventTime=when.isoformat(),
        run=Run(runId=execution.id, facets=run_facets),
        job=job,
        producer=PRODUCER,
        inputs=inputs,
        outputs=outputs,
    )


def _schema_facet(lineage: Lineage | None, node: str) -> dict[str, Any]:
    from openlineage.client.facet_v2 import schema_dataset

    schema = lineage.node(node).schema if lineage is not None else None
    if not schema:
        return {}
    fields = [schema_dataset.SchemaDatasetFacetFields(name=c, type=t or None) for c, t in schema.items()]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields)}


def _column_facet(lineage: Lineage | None, node: str, datasets: dict[str, Dataset]) -> dict[str, Any]:
    """The sink's columnLineage facet: each column's source fields, and the fields that decide its rows."""
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    if lineage is None:
        return {}
    fields = {}
    for column in lineage.node(node).columns:
        found = []
        for origin in lineage.origins(Ref(node, column)):
            if origin.source.node not in datasets:
                continue
            strongest = max((h.subtype for h in origin.path), key=DIRECT_ORDER.index, default="IDENTITY")
            ns, name = datasets[origin.source.node]
            how = cl.Transformation(type="DIRECT", subtype=strongest, description=origin.transforms, masking=False)
            found.append(cl.InputField(namespace=ns, name=name, field=origin.source.column, transformations=[how]))
        fields[column] = cl.Fields(inputFields=found)
    rows = [
        cl.InputField(
            namespace=datasets[source.node][0], name=datasets[source.node][1], field=source.column,
            transformations=[cl.Transformation(type="INDIRECT", subtype=subtype, masking=False)],
        )
        for source, subtype in sorted(lineage.row_sources(node))
        if source.node in datasets
    ]  # fmt: skip
    return {"columnLineage": cl.ColumnLineageDatasetFacet(fields=fields, dataset=rows)}


def _datasets(definition: Definition, roots: tuple[Path, ...]) -> dict[str, Dataset]:
    """(namespace, name) of each source and sink the definition reads or writes, as far as can be told."""
    out = {}
    for node in definition.nodes:
        try:
            found = _dataset(node, roots)
        except (OSError, ValueError) as exc:  # a source file not there yet: the event goes without it
            log.info("OpenLineage dataset of node %s unknown: %s", node.name, exc)
            continue
        if found is not None:
            out[node.name] = found
    return out


def _dataset(node: Node, roots: tuple[Path, ...]) -> Dataset | None:
    config = node.config
    if node.type in {"read_csv", "read_parquet", "read_ndjson"}:
        files = resolve_files(config["path"], roots)
        where = files[0] if len(files) == 1 else Path(*Path(files[0]).parts[: _common(files)])
        return "file", str(where)  # several files: their folder, OpenLineage's name for partitioned data
    if node.type in {"write_parquet", "write_csv"}:
        return "file", str(resolve_path(config["path"], roots))
    if node.type in {"read_duckdb", "write_duckdb"}:
        database = resolve_path(config["database"], roots, "database")
        tables = config.get("table") or _tables(config["query"])
        return f"duckdb://{database}", tables
    if node.type == "http_json":
        url = urlsplit(config["url"])
        return f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}", url.path or "/"
    return None


def _common(files: list[Path]) -> int:
    parts = [Path(f).parts for f in files]
    return next((i for i, group in enumerate(zip(*parts, strict=False)) if len(set(group)) > 1), len(parts[0]) - 1)


def _tables(query: str) -> str:
    try:
        names = [t.name for t in sqlglot.parse_one(query, read="duckdb").find_all(exp.Table)]
    except sqlglot.errors.SqlglotError:
        names = []
    return ",".join(dict.fromkeys(names)) or "query"
