"""Workflow tests: given rows for sources, expected rows or assertions for chosen nodes, run in this process.

A test lives in a definition's ``tests:`` section, or in ``NAME.tests.yaml`` beside the definition file
``NAME.yaml`` (a mapping with ``tests:``; changing it makes no new version). ``run_test`` runs only what
the expected nodes depend on, on Polars through ``engine.offline`` (no Prefect server, no catalog
write): every source there is replaced by its given rows, every sink by a pass-through (nothing is
written). Expected rows are compared on the columns they name, as a multiset unless ``ordered``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from weflow import workflows
from weflow.compile import plan as planning
from weflow.config import settings
from weflow.core import document
from weflow.core.graph import upstream
from weflow.core.model import Definition, Expectation, GivenRows, Node, WorkflowTest
from weflow.engine.offline import run_plan
from weflow.engine.runtime import PlanResult, RunSpec
from weflow.errors import DefinitionError
from weflow.execution.lifecycle import resolve_inputs
from weflow.nodes.base import NodeConfig, NodeInputs, NodeType, RunContext, resolve_path
from weflow.nodes.registry import node_types

BESIDE = ".tests.yaml"


@dataclass(frozen=True)
class Mismatch:
    """One check of a test that did not hold: at which node, which check, one line, and the detail (a diff)."""

    node: str
    check: str  # rows, values, row_count, contract, run
    message: str
    detail: str = ""


@dataclass(frozen=True)
class Outcome:
    """One workflow test's result."""

    workflow: str
    test: str
    mismatches: tuple[Mismatch, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def title(self) -> str:
        return f"{self.workflow}::{self.test}"

    def report(self) -> str:
        """The failures as text: per mismatch a line naming workflow, test and node, then its diff."""
        lines = []
        for m in self.mismatches:
            lines.append(f"{self.title} node {m.node!r} ({m.check}): {m.message}")
            lines.extend("    " + line for line in m.detail.splitlines())
        return "\n".join(lines)


# --- finding tests ------------------------------------------------------------------


def from_file(path: str | Path) -> Definition:
    """A definition file, with the tests of ``NAME.tests.yaml`` beside it added, checked like ``apply``."""
    path = Path(path)
    definition = workflows.parse_file(path)
    beside = path.with_name(path.stem + BESIDE)
    if beside.is_file() and not path.name.endswith(BESIDE):
        definition = with_tests_from(definition, beside)
    return workflows.check(definition)


def with_tests_from(definition: Definition, path: Path) -> Definition:
    """``definition`` with the tests of the file ``path`` (``tests: [...]``) after its own; errors name the file."""
    data = document.load(path.read_bytes(), source=str(path), limit=document.max_bytes({}))
    if not isinstance(data, Mapping) or set(data) != {"tests"}:
        raise DefinitionError([(str(path), "a tests file is a mapping with one key, tests")], workflow=definition.name)
    doc = definition.to_document()
    doc["tests"] = [*doc.get("tests", []), *(data["tests"] or [])]
    try:
        return document.from_data(doc)
    except DefinitionError as exc:
        own = len(definition.tests)
        raise DefinitionError([(_beside_path(str(path), p, own), m) for p, m in exc.problems], exc.workflow) from None


def _beside_path(file: str, path: str, own: int) -> str:
    """``tests[3].inputs.x`` of the merged document as ``FILE: tests[1].inputs.x`` when it came from FILE."""
    if not path.startswith("tests["):
        return path
    index, rest = path[len("tests[") :].split("]", 1)
    return f"{file}: tests[{int(index) - own}]{rest}" if int(index) >= own else path


def stored(names: Sequence[str], scope: workflows.Scope) -> list[Definition]:
    """The current versions of the named stored workflows; with no names, every stored workflow with tests."""
    if names:
        return [workflows.version(name, scope).definition for name in names]
    found = (workflows.version_of(w, scope).definition for w in workflows.list_workflows(scope))
    return [d for d in found if d.tests]


# --- running ------------------------------------------------------------------------


def run_all(
    definitions: Iterable[Definition], only: Sequence[str] = (), progress: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """Every test of every definition (only those whose name contains one of ``only``, when given)."""
    outcomes = []
    for definition in definitions:
        for index, test in enumerate(definition.tests):
            if only and not any(part in test.name for part in only):
                continue
            outcome = run_test(definition, index)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    return outcomes


def run_test(definition: Definition, index: int) -> Outcome:
    """Run ``definition.tests[index]``: the expected nodes and their upstream, sources replaced, sinks not written."""
    test = definition.tests[index]
    t0 = time.perf_counter()
    cfg = settings()
    roots = cfg.roots_for(cfg.organization)
    part, types = _under_test(definition, index, roots)
    spec = RunSpec(
        workflow=definition.name,
        params=resolve_inputs(definition, test.input_data),
        data_roots=roots,
        keep=frozenset(test.expect),
    )
    result = run_plan(planning.build(part, types, fuse=False), types, spec)  # unfused: every node's frame is kept
    found = [*_run_failure(result), *_checks(test, result)]
    return Outcome(definition.name, test.name, tuple(found), time.perf_counter() - t0)


class _NoConfig(NodeConfig):
    """The config of a stand-in node (given rows, a sink that writes nothing)."""


def _under_test(definition: Definition, index: int, roots: tuple[Path, ...]) -> tuple[Definition, dict[str, NodeType]]:
    """The part of ``definition`` the test's expected nodes need, sources given their rows, sinks writing nothing."""
    test = definition.tests[index]
    keep = set().union(*(upstream(definition, name) for name in test.expect))
    fed = {c.to.node for c in definition.connections}
    types = dict(node_types())
    given: dict[str, pl.DataFrame] = {}
    nodes: list[Node] = []
    for node in (n for n in definition.nodes if n.name in keep):
        if node.name not in fed:
            if node.name not in test.inputs:
                needs = ", ".join(repr(n) for n in test.expect if node.name in upstream(definition, n))
                problem = f"source {node.name!r} (read by {needs}) needs rows: add tests[{index}].inputs.{node.name}"
                raise DefinitionError([(f"tests[{index}].inputs", problem)], workflow=definition.name)
            given[node.name] = _given_frame(test.inputs[node.name], f"tests[{index}].inputs.{node.name}", roots)
            node = _stand_in(node, types, "given", _given_run(given), kind="source")
        elif types[node.type].kind == "sink":
            node = _stand_in(node, types, "unwritten", _pass_through, kind="transform")
        nodes.append(node)
    connections = tuple(c for c in definition.connections if c.to.node in keep)
    return definition.model_copy(update={"nodes": tuple(nodes), "connections": connections, "tests": ()}), types


def _stand_in(node: Node, types: dict[str, NodeType], role: str, run: Any, kind: Any) -> Node:
    """``node`` as a node of a stand-in type (``read_csv:given``), added to ``types``; its contracts stay."""
    name = f"{node.type}:{role}"
    types[name] = replace(types[node.type], name=name, config=_NoConfig, run=run, kind=kind, lazy=True, check=None)
    return node.model_copy(update={"type": name, "config": {}})


def _given_run(given: Mapping[str, pl.DataFrame]) -> Callable[[Any, NodeInputs, RunContext], pl.LazyFrame]:
    def run(config: Any, inputs: NodeInputs, ctx: RunContext) -> pl.LazyFrame:
        return given[ctx.node].lazy()

    return run


def _pass_through(config: Any, inputs: NodeInputs, ctx: RunContext) -> pl.LazyFrame:
    return inputs.one()


def _given_frame(given: GivenRows, where: str, roots: tuple[Path, ...]) -> pl.DataFrame:
    """The rows standing in for a source: inline, or read from a CSV/Parquet file under the data roots."""
    try:
        if given.path is not None:
            path = resolve_path(given.path, roots, field=f"{where}.path")
            frame = pl.read_parquet(path) if path.suffix.lower() == ".parquet" else pl.read_csv(path)
        else:
            frame = _rows_frame(given.rows or (), given.dtypes)
        return _typed(frame, given.dtypes)
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        head, _, problem = _first_line(exc).partition(f"{where}.path: ")  # resolve_path names the field itself
        raise DefinitionError([(f"{where}.path", problem) if problem and not head else (where, head)]) from None


def _rows_frame(rows: Sequence[Mapping[str, Any]], dtypes: Mapping[str, str]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema={c: getattr(pl, t) for c, t in dtypes.items()})
    return pl.DataFrame(list(rows), infer_schema_length=None)


def _typed(frame: pl.DataFrame, dtypes: Mapping[str, str]) -> pl.DataFrame:
    unknown = [c for c in dtypes if c not in frame.columns]
    if unknown:
        raise ValueError(f"dtypes name columns the rows do not have: {', '.join(unknown)}")
    return frame.cast({c: getattr(pl, t) for c, t in dtypes.items()}) if dtypes else frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- checking -----------------------------------------------------------------------


def _run_failure(result: PlanResult) -> list[Mismatch]:
    if result.error is None:
        return []
    node = result.error_node or "?"
    cases = [{k: v for k, v in f.items() if k != "node"} for f in result.failures if f.get("node") == node]
    detail = frame_text(pl.DataFrame(cases[:20]), "contract failure cases") if cases else ""
    return [Mismatch(node, "run", f"the run failed: {_first_line(result.error)}", detail)]


def _checks(test: WorkflowTest, result: PlanResult) -> list[Mismatch]:
    found = []
    for node, expected in test.expect.items():
        frame = result.outputs.get(node)
        if frame is None:
            continue  # the run failed before this node: its failure says why
        found.extend(_check(node, expected, frame, result))
    return found


def _check(node: str, expected: Expectation, frame: pl.DataFrame, result: PlanResult) -> list[Mismatch]:
    found = []
    if expected.row_count is not None and frame.height != expected.row_count:
        found.append(Mismatch(node, "row_count", f"expected {expected.row_count} rows, got {frame.height}"))
    for check in ("rows", "values"):
        if getattr(expected, check) is None:
            continue
        try:
            want = _expected_frame(expected, check)
        except (ValueError, pl.exceptions.PolarsError) as exc:
            found.append(Mismatch(node, check, f"the expected {check} do not make a frame: {_first_line(exc)}"))
            continue
        diff = frame_diff(want, frame, ordered=expected.ordered)
        if diff is not None:
            found.append(Mismatch(node, check, diff.summary, diff.text))
    if expected.contract:
        cases = [{k: v for k, v in f.items() if k != "node"} for f in result.failures if f.get("node") == node]
        if cases:
            detail = frame_text(pl.DataFrame(cases[:20]), "contract failure cases")
            found.append(Mismatch(node, "contract", f"the contract failed on {len(cases)} case(s)", detail))
    return found


def _expected_frame(expected: Expectation, check: str) -> pl.DataFrame:
    if check == "values":
        frame = pl.DataFrame({c: list(v) for c, v in (expected.values or {}).items()}, strict=False)
    else:
        frame = _rows_frame(expected.rows or (), expected.dtypes)
    return _typed(frame, expected.dtypes)


# --- comparing frames ---------------------------------------------------------------

_COUNT = "__weflow_nth__"


@dataclass(frozen=True)
class FrameDiff:
    """How an output differs from the expected frame: one line, and the rows and columns that differ as text."""

    summary: str
    text: str


def frame_diff(expected: pl.DataFrame, actual: pl.DataFrame, ordered: bool = False) -> FrameDiff | None:
    """None when ``actual`` holds ``expected``'s rows on ``expected``'s columns (in order if ``ordered``)."""
    absent = [c for c in expected.columns if c not in actual.columns]
    if absent:
        return FrameDiff(f"columns missing from the output: {', '.join(absent)}", f"output columns: {actual.columns}")
    got = actual.select(expected.columns)
    expected, clashes = _cast_like(expected, got.schema)
    if clashes:
        return FrameDiff("columns differing in type: " + "; ".join(clashes), frame_text(got, "output"))
    missing, extra = _minus(expected, got), _minus(got, expected)
    if missing.is_empty() and extra.is_empty():
        if not ordered or _normal(expected).equals(_normal(got)):
            return None
        return FrameDiff("the same rows in another order", frame_text(expected, "expected") + frame_text(got, "output"))
    summary = f"{missing.height} row(s) missing, {extra.height} extra"
    wide = len(expected.columns) > 1
    only = [c for c in expected.columns if wide and _minus(expected.drop(c), got.drop(c)).is_empty()]
    if only and missing.height == extra.height:
        summary += f" (they differ in column {only[0]})" if len(only) == 1 else f" (columns {', '.join(only)})"
    text = frame_text(missing, "rows missing (expected, not in the output)") + frame_text(
        extra, "rows extra (in the output, not expected)"
    )
    return FrameDiff(summary, text)


def _cast_like(frame: pl.DataFrame, schema: pl.Schema) -> tuple[pl.DataFrame, list[str]]:
    """``frame`` with each column cast to ``schema``'s dtype, and the columns that do not cast."""
    clashes = []
    for column, dtype in schema.items():
        have = frame.schema[column]
        if have != dtype and not _widens(have, dtype):
            clashes.append(f"{column}: expected {have}, output is {dtype}")
            continue
        try:
            frame = frame.with_columns(pl.col(column).cast(dtype, strict=True))
        except pl.exceptions.PolarsError as exc:
            clashes.append(f"{column}: expected values do not cast to {dtype}: {_first_line(exc)}")
    return frame, clashes


def _widens(have: pl.DataType, want: pl.DataType) -> bool:
    """Whether expected values typed ``have`` may stand for ``want`` (YAML writes 3 for 3.0, dates as text)."""
    if have == pl.Null or (have.is_integer() and want.is_numeric()) or (have.is_float() and want.is_float()):
        return True
    return have == pl.String and want.is_temporal()


def _normal(frame: pl.DataFrame) -> pl.DataFrame:
    """Floats rounded to 10 significant digits, so 0.1 + 0.2 matches 0.3."""
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns(pl.col(floats).round_sig_figs(10)) if floats else frame


def _minus(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``a`` not in ``b``, duplicates counted (a multiset difference)."""
    if not a.columns:
        return a
    cols = a.columns
    nth = pl.int_range(pl.len()).over(cols).alias(_COUNT)
    left, right = _normal(a).with_columns(nth), _normal(b).with_columns(nth)
    return left.join(right, on=[*cols, _COUNT], how="anti", nulls_equal=True).drop(_COUNT)


def frame_text(frame: pl.DataFrame, title: str) -> str:
    """A frame as a text table under a title (at most 20 rows, every column)."""
    if frame.is_empty():
        return ""
    with pl.Config(tbl_rows=20, tbl_cols=-1, tbl_width_chars=160, tbl_hide_dataframe_shape=True, fmt_str_lengths=60):
        return f"{title}: {frame.height}\n{frame}\n"
