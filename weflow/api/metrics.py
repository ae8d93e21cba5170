"""``/metrics``: the caller's organization's execution metrics in Prometheus' text format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from weflow import monitor
from weflow.api.security import Caller

router = APIRouter(tags=["metrics"])


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stats: dict[str, Any]) -> str:
    """Prometheus exposition text for the output of ``monitor.stats``."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {float(value):g}")

    items = stats.items()
    family(
        "weflow_executions_total", "counter", "Finished executions by workflow and outcome.",
        [({"workflow": w, "outcome": "succeeded"}, m["succeeded"]) for w, m in items]
        + [({"workflow": w, "outcome": "failed"}, m["failed"]) for w, m in items]
        + [({"workflow": w, "outcome": "cancelled"}, m["runs"] - m["succeeded"] - m["failed"]) for w, m in items],
    )  # fmt: skip
    family(
        "weflow_execution_success_ratio", "gauge", "Share of finished executions that succeeded.",
        [({"workflow": w}, m["success_rate"]) for w, m in items],
    )  # fmt: skip
    family(
        "weflow_execution_duration_milliseconds", "summary", "Execution duration quantiles.",
        [({"workflow": w, "quantile": q}, m["duration_ms"][k]) for w, m in items for q, k in (("0.5", "p50"),
                                                                                          ("0.95", "p95"))],
    )  # fmt: skip
    family(
        "weflow_execution_duration_max_milliseconds", "gauge", "Longest execution.",
        [({"workflow": w}, m["duration_ms"]["max"]) for w, m in items],
    )  # fmt: skip
    family(
        "weflow_rows_out_total", "counter", "Rows output by nodes of finished executions.",
        [({"workflow": w}, m["rows_out"]) for w, m in items],
    )  # fmt: skip
    family(
        "weflow_contract_failures_total", "counter", "Contract failure cases recorded.",
        [({"workflow": w}, m["contract_failures"]) for w, m in items],
    )  # fmt: skip
    family(
        "weflow_node_failures_total", "counter", "Failed node executions by node and error type.",
        [({"workflow": w, "node": f["node"], "error_type": f["error_type"]}, f["count"])
         for w, m in items for f in m["failures_by_node"]],
    )  # fmt: skip
    return "\n".join(out) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(scope: Caller) -> PlainTextResponse:
    """Execution metrics of the caller's organization (Prometheus text format 0.0.4)."""
    stats = monitor.stats(scope)
    return PlainTextResponse(render(stats), media_type="text/plain; version=0.0.4")
