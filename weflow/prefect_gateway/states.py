"""The one map from Prefect's flow-run states to weflow's run states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weflow.core.entities import RunState

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

_FINAL = {
    "COMPLETED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "CRASHED": RunState.FAILED,
    "CANCELLED": RunState.CANCELLED,
}


FINAL_TYPES = tuple(_FINAL)  # Prefect's state types of a flow run that ended


def final_state(kind: str, name: str) -> RunState | None:
    """The weflow state of a Prefect state type and name; None while the flow run has not ended."""
    mapped = _FINAL.get(kind)
    return RunState.TIMED_OUT if mapped is not None and name == "TimedOut" else mapped


def ended(state: State[Any] | None, fallback: RunState) -> RunState:
    """The end of an in-process flow run: Prefect's word where it is clear, else what the run's records say."""
    if state is None:
        return fallback
    mapped = final_state(state.type.value, state.name or "")
    if mapped in (RunState.SUCCEEDED, RunState.CANCELLED, RunState.TIMED_OUT):
        return mapped
    return fallback if fallback is not RunState.SUCCEEDED else RunState.FAILED
