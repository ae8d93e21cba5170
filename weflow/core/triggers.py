"""Event triggers of a definition: run after another workflow's execution ends, or once per new file.

Pure data and checks. ``weflow.deploy`` compiles them into Prefect automations on the workflow's
deployment (``prefect_gateway.triggers``); ``weflow.file_triggers`` watches the folders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WORKFLOW = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # as model.WORKFLOW_NAME_PATTERN
INPUT = r"^[A-Za-z_][A-Za-z0-9_]*$"
# what an ``after`` trigger may pass on: the upstream execution's id, status, workflow, or one of its inputs
FIELD = re.compile(r"^(execution_id|status|workflow|inputs\.[A-Za-z_][A-Za-z0-9_]*)$")

Problem = tuple[tuple[str | int, ...], str]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class After(_Frozen):
    """Run when an execution of ``workflow`` ends with ``status``, passing fields of it as inputs."""

    workflow: str = Field(pattern=WORKFLOW)
    status: Literal["succeeded", "failed", "any"] = "succeeded"
    inputs: dict[str, str] = Field(default_factory=dict)  # this workflow's input -> a field of the upstream's

    @field_validator("inputs")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if not FIELD.match(source):
                raise ValueError(f"input {name!r}: {source!r} is not execution_id, status, workflow or inputs.NAME")
        return value


class FileArrival(_Frozen):
    """Run once per new file matching ``glob`` under ``root`` (a folder in the data roots), its path as ``input``."""

    glob: str = Field(min_length=1, max_length=512)
    root: str = Field(default="", max_length=512)
    input: str = Field(pattern=INPUT)

    @field_validator("glob", "root")
    @classmethod
    def _relative(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\0" in value:
            raise ValueError(f"{value!r} must be relative to the data roots, without '..'")
        return value

    @property
    def pattern(self) -> str:
        """The glob as a path under the data roots."""
        return str(PurePosixPath(self.root) / self.glob) if self.root else self.glob


class Trigger(_Frozen):
    """One event trigger: exactly one of ``after`` or ``file``."""

    after: After | None = None
    file: FileArrival | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if (self.after is None) == (self.file is None):
            raise ValueError("a trigger is either after: {...} or file: {...}")
        return self


def problems(name: str, triggers: Sequence[Trigger], inputs: Mapping[str, str]) -> list[Problem]:
    """Triggers feeding an undeclared or non-string input (``inputs``: name -> type), or waiting on themselves."""
    found: list[Problem] = []

    def fed(where: tuple[str | int, ...], input_name: str) -> None:
        if input_name not in inputs:
            found.append((where, f"{input_name!r} is not an input of {name!r} (declare it under inputs)"))
        elif inputs[input_name] != "string":
            found.append((where, f"input {input_name!r} must be of type string: a trigger passes text"))

    for i, trigger in enumerate(triggers):
        if trigger.after is not None:
            if trigger.after.workflow == name:
                found.append((("triggers", i, "after", "workflow"), f"{name!r} cannot run after itself"))
            for key in trigger.after.inputs:
                fed(("triggers", i, "after", "inputs", key), key)
        elif trigger.file is not None:
            fed(("triggers", i, "file", "input"), trigger.file.input)
    return found


def cycle(upstreams: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``after`` triggers (workflow -> the workflows it runs after) as ``[A, B, A]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for up in upstreams.get(node, ()):
            if state.get(up) == 1:
                return [*path[path.index(up) :], up]
            if up not in state and (found := visit(up)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(upstreams):
        if start not in state and (found := visit(start)):
            return found
    return None
