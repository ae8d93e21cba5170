"""The definition document as typed, immutable data: Definition, Node, Connection, Contract."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from weflow.core import mermaid
from weflow.core.input_types import InputType, mismatch
from weflow.core.secret_ref import SecretURL
from weflow.core.triggers import Trigger, problems

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DEFAULT_OUTPUT_PORT = "out"
DEFAULT_TIMEOUT_SECONDS = 300.0
# What one definition may cost: a 5,000-node chain took ~2 s to read from YAML here, 0.15 s to check and plan.
MAX_NODES = 5_000
MAX_CONNECTIONS = 20_000

DTYPES = frozenset(
    {
        "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
        "Float32", "Float64", "Decimal", "String", "Boolean", "Date", "Datetime",
        "Time", "Duration", "Categorical", "Null",
    }
)  # fmt: skip
CHECKS = frozenset({"ge", "le", "gt", "lt", "eq", "ne", "isin", "notin", "str_matches", "str_length", "between"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Column(_Frozen):
    """Declarative spec of one column in a contract."""

    dtype: str | None = None
    nullable: bool = True
    unique: bool = False
    required: bool = True
    checks: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r} (known: {', '.join(sorted(DTYPES))})")
        return value

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, arg in value.items():
            if name not in CHECKS:
                raise ValueError(f"unknown check {name!r} (known: {', '.join(sorted(CHECKS))})")
            if name in {"isin", "notin"} and not isinstance(arg, list):
                raise ValueError(f"check {name!r} takes a list of values")
            if name in {"str_length", "between"} and not (isinstance(arg, dict) and set(arg) <= {"min", "max"} and arg):
                raise ValueError(f"check {name!r} takes {{min: ..., max: ...}}")
            if name == "str_matches":
                if not isinstance(arg, str):
                    raise ValueError("check 'str_matches' takes a regular expression string")
                try:
                    re.compile(arg)
                except re.error as exc:
                    raise ValueError(f"check 'str_matches': bad regular expression: {exc}") from exc
            if name in {"ge", "le", "gt", "lt"} and not isinstance(arg, int | float | str):
                raise ValueError(f"check {name!r} takes a number, date or string")
        return value


class Contract(_Frozen):
    """Declarative frame contract, compiled to a Pandera schema when run."""

    columns: dict[str, Column] = Field(default_factory=dict)
    strict: bool = False
    coerce: bool = False
    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    on_failure: Literal["fail", "warn", "quarantine"] = "fail"
    # "data" validates a materialised frame (values and schema); "schema" checks names and dtypes only.
    checks_data: bool = True


class Position(_Frozen):
    x: float
    y: float


# Source types that can load incrementally: their scan or query is narrowed to rows above a cursor
# (``weflow.nodes.incremental``; a test checks that the two lists agree).
INCREMENTAL_TYPES = frozenset({"read_csv", "read_parquet", "read_ndjson", "read_duckdb", "read_postgres"})


class Incremental(_Frozen):
    """A source reads only rows whose ``cursor`` column (an integer, date or timestamp) is above the last run's."""

    cursor: str = Field(pattern=NAME_PATTERN, max_length=128, description="the column a run continues from")


class Node(_Frozen):
    """One step of a workflow: a node type, its config and its run policy."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    type: str = Field(min_length=1)
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0, le=100)
    retry_delay_seconds: float = Field(default=0.0, ge=0)
    timeout_seconds: float | None = Field(default=None, gt=0)
    contract: Contract | None = None
    input_contracts: dict[str, Contract] = Field(default_factory=dict)
    persist: bool = False
    compensate: bool = True  # undo this node's effect (a sink restores what it replaced) if a later node fails
    position: Position | None = None
    incremental: Incremental | None = None  # a source loads only rows above its cursor (weflow cursors)

    @model_validator(mode="after")
    def _incremental_source(self) -> Node:
        if self.incremental is not None and self.type not in INCREMENTAL_TYPES:
            can = ", ".join(sorted(INCREMENTAL_TYPES))
            msg = f"node type {self.type!r} cannot load incrementally (types that can: {can})"
            error = InitErrorDetails(type=PydanticCustomError("incremental", msg), loc=("incremental",), input=None)
            raise ValidationError.from_exception_data("Node", [error])
        return self


class Endpoint(_Frozen):
    node: str
    port: str | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        node, _, port = text.partition(".")
        return cls(node=node, port=port or None)

    def __str__(self) -> str:
        return f"{self.node}.{self.port}" if self.port else self.node


class Connection(_Frozen):
    """An edge: the output of ``source`` feeds input ``target.port`` (port optional)."""

    source: str = Field(alias="from")
    target: str = Field(alias="to")

    @property
    def from_(self) -> Endpoint:
        return Endpoint.parse(self.source)

    @property
    def to(self) -> Endpoint:
        return Endpoint.parse(self.target)

    @field_validator("source", "target")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$", value):
            raise ValueError(f"{value!r} is not 'node' or 'node.port'")
        if value.endswith("." + DEFAULT_OUTPUT_PORT) and value.count(".") == 1:
            return value.split(".")[0]
        return value


class InputSpec(_Frozen):
    """A declared run input: reaches nodes as a bound parameter ``$name`` (see the README)."""

    type: InputType = "string"
    default: str | int | float | bool | None = None
    description: str = ""
    allowed: tuple[str | int | float | bool, ...] = ()  # the values a run may give (a choice in the run form)

    @field_validator("default")
    @classmethod
    def _default_typed(cls, value: str | float | bool | None, info: ValidationInfo) -> str | float | bool | None:
        kind = info.data.get("type")  # absent when the type itself was refused
        wrong = mismatch(kind, value) if value is not None and kind is not None else None
        if wrong:
            raise ValueError(wrong)
        return value

    @model_validator(mode="after")
    def _allowed_typed(self) -> InputSpec:
        wrong = next((f"allowed value {v!r}: {w}" for v in self.allowed if (w := mismatch(self.type, v))), None)
        if wrong or (self.allowed and self.default is not None and self.default not in self.allowed):
            raise ValueError(wrong or f"default {self.default!r} is not one of the allowed values")
        return self


class Retention(_Frozen):
    """How much of a workflow's history ``weflow prune`` keeps; a value left out takes the catalog's default.

    0 keeps everything on that count (as in n8n); versions are never pruned.
    """

    max_age_days: float | None = Field(default=None, ge=0, le=36_500)
    max_executions: int | None = Field(default=None, ge=0, le=1_000_000_000)


class WorkflowSettings(_Frozen):
    """How a workflow runs: its time limit, outputs, fusion, concurrency, where steps run, memory cap, retention."""

    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0)
    persist_outputs: bool = False
    fuse: bool = True
    # runs of this workflow at once (its deployment's concurrency limit); null: no limit of its own (a Prefect
    # deployment's default), only the workers' and the pool's: runs may overlap, and no slot's lease is held
    max_concurrent_runs: int | None = Field(default=1, ge=1, le=1000)
    node_queue: bool = False  # run each step on the node queue's task workers (WORKFLOW_NODE_QUEUE)
    dask: str | None = Field(default=None, pattern=r"^(local|tcp://[A-Za-z0-9_.\-]+:\d+)$")  # steps on Dask
    # the run stops (FAILED) when its process RSS goes over this; DuckDB gets it as memory_limit
    max_memory_mb: int | None = Field(default=None, ge=64, le=1_048_576)
    retention: Retention = Field(default_factory=Retention)  # how much history weflow prune keeps
    # where a deployed run runs: inside a long-lived weflow worker, or in a fresh process (heavy or untrusted work)
    isolation: Literal["worker", "process"] = "worker"
    result_preview: bool | int = True  # the run's result artifact in Prefect: off, on (10 rows) or that many rows

    @field_validator("result_preview")
    @classmethod
    def _preview_rows(cls, value: bool | int) -> bool | int:
        if not isinstance(value, bool) and not 1 <= value <= 1000:
            raise ValueError("result_preview takes true, false or a number of rows from 1 to 1000")
        return value


AlertKind = Literal["failure", "duration", "rows", "missed_schedule"]


class AlertRule(_Frozen):
    """When to alert and where: a JSON POST to ``webhook``, at most once per execution (or missed slot).

    - ``failure``: the execution FAILED or TIMED_OUT;
    - ``duration``: it took over ``max_seconds``, or over ``p95_factor`` x the p95 of recent runs;
    - ``rows``: ``node``'s output rows outside ``min_rows``..``max_rows``, or over ``median_factor``
      x (or under 1/``median_factor`` of) the median of recent runs;
    - ``missed_schedule``: a cron slot passed ``grace_seconds`` ago with no run started for it.
    "Recent runs" are the last ``history`` successful ones; no comparison before ``min_history``.
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    on: AlertKind
    webhook: SecretURL  # an http(s) URL, or {secret: NAME} holding one
    max_seconds: float | None = Field(default=None, gt=0)
    p95_factor: float | None = Field(default=None, gt=1)
    node: str | None = None
    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    median_factor: float | None = Field(default=None, gt=1)
    history: int = Field(default=20, ge=1, le=1000)
    min_history: int = Field(default=5, ge=1, le=1000)
    grace_seconds: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        if self.on == "duration" and self.max_seconds is None and self.p95_factor is None:
            raise ValueError("a duration alert needs max_seconds or p95_factor")
        if self.on == "rows":
            if self.node is None:
                raise ValueError("a rows alert needs the node whose output it watches")
            if self.min_rows is None and self.max_rows is None and self.median_factor is None:
                raise ValueError("a rows alert needs min_rows, max_rows or median_factor")
        if self.min_rows is not None and self.max_rows is not None and self.min_rows > self.max_rows:
            raise ValueError(f"min_rows {self.min_rows} is over max_rows {self.max_rows}")
        return self


def _known_dtypes(value: dict[str, str]) -> dict[str, str]:
    for column, dtype in value.items():
        if dtype not in DTYPES:
            raise ValueError(f"column {column!r}: unknown dtype {dtype!r} (known: {', '.join(sorted(DTYPES))})")
    return value


class GivenRows(_Frozen):
    """Rows standing in for a source node in a workflow test: inline ``rows``, or a CSV/Parquet ``path``."""

    rows: tuple[dict[str, Any], ...] | None = None
    path: str | None = None  # under the data roots
    dtypes: dict[str, str] = Field(default_factory=dict)  # column -> dtype, for rows YAML cannot type

    _dtypes = field_validator("dtypes")(_known_dtypes)

    @field_validator("path")
    @classmethod
    def _table_file(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"{value!r} is not a .csv or .parquet file")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> GivenRows:
        if (self.rows is None) == (self.path is None):
            raise ValueError("give either rows or path")
        return self


class Expectation(_Frozen):
    """What a workflow test checks of one node's output; every check given must hold.

    ``rows`` (and ``values``, column -> values) compare only the columns they name, order-insensitive
    unless ``ordered``; ``contract``: the node's contracts pass (also one that only warns).
    """

    rows: tuple[dict[str, Any], ...] | None = None
    values: dict[str, tuple[Any, ...]] | None = None
    ordered: bool = False
    dtypes: dict[str, str] = Field(default_factory=dict)
    row_count: int | None = Field(default=None, ge=0)
    contract: bool = False

    _dtypes = field_validator("dtypes")(_known_dtypes)

    @model_validator(mode="after")
    def _checks_something(self) -> Expectation:
        if self.rows is None and self.values is None and self.row_count is None and not self.contract:
            raise ValueError("expect at least one of rows, values, row_count, contract")
        if self.values is not None and len({len(v) for v in self.values.values()}) > 1:
            raise ValueError("values: every column needs the same number of values")
        return self


class WorkflowTest(_Frozen):
    """A workflow test: rows for sources, run inputs, and what chosen nodes must output (``weflow test``)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    input_data: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, GivenRows] = Field(default_factory=dict)
    expect: dict[str, Expectation] = Field(min_length=1)


def workflow_test_problems(definition: Definition) -> list[tuple[tuple[str | int, ...], str]]:
    """Tests naming a node that does not exist, rows given to a node that has inputs, a contract check without one."""
    nodes = {n.name: n for n in definition.nodes}
    fed = {c.to.node for c in definition.connections}
    found: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    for i, test in enumerate(definition.tests):
        if test.name in seen:
            found.append((("tests", i, "name"), f"duplicate test name {test.name!r} (also tests[{seen[test.name]}])"))
        seen.setdefault(test.name, i)
        for name in test.inputs:
            if name not in nodes:
                found.append((("tests", i, "inputs", name), "unknown node"))
            elif name in fed:
                found.append((("tests", i, "inputs", name), "not a source (it has inputs): give rows to its sources"))
        for name, expected in test.expect.items():
            node = nodes.get(name)
            if node is None:
                found.append((("tests", i, "expect", name), "unknown node"))
            elif expected.contract and node.contract is None and not node.input_contracts:
                found.append((("tests", i, "expect", name, "contract"), f"node {name!r} has no contract"))
    return found


class Definition(_Frozen):
    """A workflow definition document: the canonical, storable form of a workflow."""

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    description: str = ""
    status: Literal["DRAFT", "ACTIVE", "PAUSED", "ARCHIVED"] = "DRAFT"
    schedule: tuple[str, ...] = ()
    triggers: tuple[Trigger, ...] = ()  # after another workflow's execution, or per new file
    configuration: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)
    alerts: tuple[AlertRule, ...] = ()
    nodes: tuple[Node, ...] = Field(min_length=1)
    connections: tuple[Connection, ...] = ()
    tests: tuple[WorkflowTest, ...] = ()

    @field_validator("nodes", "connections", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        limit = MAX_NODES if info.field_name == "nodes" else MAX_CONNECTIONS
        if isinstance(value, list | tuple) and len(value) > limit:
            raise ValueError(f"{len(value)} {info.field_name}, over the limit of {limit}")
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_list(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for expr in value:
            try:
                CronSim(expr, datetime.now(UTC))
            except (CronSimError, ValueError) as exc:
                raise ValueError(f"invalid cron expression {expr!r}: {exc}") from exc
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for key in value:
            if not re.match(NAME_PATTERN, key):
                raise ValueError(f"input name {key!r} must be a letter or _ then letters, digits, _")
        return value

    @model_validator(mode="after")
    def _tests_name_nodes(self) -> Definition:
        found = workflow_test_problems(self)
        found += problems(self.name, self.triggers, {k: s.type for k, s in self.inputs.items()})
        if found:  # each problem at its own path, e.g. tests[0].inputs.nodex
            details = [
                InitErrorDetails(type=PydanticCustomError("test_node", msg), loc=loc, input=None) for loc, msg in found
            ]
            raise ValidationError.from_exception_data("Definition", details)
        return self

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def outline(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, str | None]]]:
        """The graph as plain data for a picture: (name, type) per node, (from, to, port) per connection."""
        boxes = [(n.name, n.type) for n in self.nodes]
        return boxes, [(c.from_.node, c.to.node, c.to.port) for c in self.connections]

    def _repr_markdown_(self) -> str:
        """In JupyterLab: the workflow's graph as a Mermaid picture."""
        head = f"**{self.name}** ({self.status}, {len(self.nodes)} nodes)"
        head += f": {self.description}" if self.description else ""
        return head + "\n\n" + mermaid.markdown(mermaid.graph(*self.outline()))

    def to_document(self) -> dict[str, Any]:
        """The normalised document: defaults left out, one schedule written as a string."""
        doc = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        doc["name"] = self.name
        doc["nodes"] = [
            {"name": n.name, "type": n.type, **n.model_dump(mode="json", exclude_defaults=True)} for n in self.nodes
        ]
        if len(self.schedule) == 1:
            doc["schedule"] = self.schedule[0]
        if self.connections:
            doc["connections"] = [c.model_dump(by_alias=True) for c in self.connections]
        order = "name description status schedule triggers configuration inputs settings alerts".split()
        ordered = {k: doc[k] for k in order if k in doc}
        ordered.update({k: v for k, v in doc.items() if k not in ordered})
        return ordered
