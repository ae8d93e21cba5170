"""The weflow API seen from a remote worker: load the pinned definition, report the execution.

Configured by ``WEFLOW_API_URL`` and ``WEFLOW_API_KEY`` (DESIGN decision 8): with them the
deployment entrypoint never opens the catalog file, which stays with the API's host.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import httpx
from pydantic import TypeAdapter

from weflow.core.document import from_data
from weflow.core.entities import Execution, Mode, NodeExecution
from weflow.core.model import Definition
from weflow.errors import WeflowError

_EXECUTION = TypeAdapter(Execution)


class ApiError(WeflowError):
    """The weflow API refused a worker's request, or could not be reached."""


def _snake(data: Any) -> Any:
    """The API speaks camelCase; the records here are snake_case."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
            out[snake] = value if snake in {"input_data", "output", "contract"} else _snake(value)
        return out
    if isinstance(data, list):
        return [_snake(v) for v in data]
    return data


class WeflowApi:
    """A small synchronous client of the worker routes (``/runner/...``) and ``GET /executions``."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    @classmethod
    def from_env(cls) -> WeflowApi | None:
        url = os.environ.get("WEFLOW_API_URL", "").strip()
        if not url:
            return None
        key = os.environ.get("WEFLOW_API_KEY", "").strip()
        if not key:
            raise ApiError("WEFLOW_API_URL is set but WEFLOW_API_KEY is not: a worker needs an API key")
        return cls(url, key)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"weflow API {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise ApiError(f"weflow API {method} {path}: {response.status_code} {detail}")
        return response.json()

    def definition(self, workflow: str, version: int | None) -> tuple[Definition, int]:
        params = {"version": version} if version is not None else {}
        data = self._call("GET", f"/runner/workflows/{workflow}/definition", params=params)
        return from_data(data["document"]), int(data["version"])

    def execution(self, execution_id: str) -> Execution:
        data = _snake(self._call("GET", f"/executions/{execution_id}"))
        data["nodes"] = [{**n, "execution_id": execution_id} for n in data.get("nodes", [])]
        return _EXECUTION.validate_python(data)

    def create_execution(
        self, workflow: str, version: int | None, mode: Mode, input_data: dict[str, Any] | None, flow_run_id: str | None
    ) -> Execution:
        body = {"workflow": workflow, "version": version, "mode": mode.value, "inputData": input_data,
                "flowRunId": flow_run_id}  # fmt: skip
        return _EXECUTION.validate_python(_snake(self._call("POST", "/runner/executions", json=body)))

    def running(self, execution_id: str, flow_run_id: str | None) -> None:
        self._call("POST", f"/runner/executions/{execution_id}/running", json={"flowRunId": flow_run_id})

    def finish(self, final: Execution, nodes: list[NodeExecution], failures: list[dict[str, Any]]) -> None:
        fields = ("status", "started_at", "finished_at", "duration_ms", "error_type", "error_message", "error_node",
                  "output", "flow_run_id")  # fmt: skip
        body: dict[str, Any] = {k: getattr(final, k) for k in fields}
        body["nodes"] = [{k: v for k, v in asdict(n).items() if k != "execution_id"} for n in nodes]
        body["failures"] = failures
        content = json.dumps(body, default=str).encode()
        headers = {"Content-Type": "application/json"}
        self._call("POST", f"/runner/executions/{final.id}/finish", content=content, headers=headers)
