"""Definition documents in YAML or JSON: parse with precise paths, dump normalised, hash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from weflow.core.model import Definition
from weflow.errors import DefinitionError


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so a key like ``on:`` stays the string "on"."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def format_path(loc: Sequence[str | int]) -> str:
    """``('nodes', 1, 'config', 'condition')`` -> ``nodes[1].config.condition``."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, bool):
            part = str(part).lower()
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return msg[:1].lower() + msg[1:]


def problems_from(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (path, message) pairs, dropping pydantic's internal tags."""
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        loc = [p for p in loc if p not in {"str", "int", "float", "bool", "list[...]"}]
        problems.append((format_path([*prefix, *loc]), _message(err)))
    return problems


def from_data(data: Any) -> Definition:
    """Validate plain data (already parsed from YAML/JSON) into a Definition."""
    if not isinstance(data, Mapping):
        raise DefinitionError([("", "a definition must be a mapping with name and nodes")])
    try:
        return Definition.model_validate(dict(data))
    except ValidationError as exc:
        raise DefinitionError(problems_from(exc), workflow=_name_of(data)) from None


def _name_of(data: Mapping[str, Any]) -> str | None:
    name = data.get("name")
    return name if isinstance(name, str) else None


def load(text: str, source: str = "<document>") -> Any:
    """Plain data from YAML or JSON text (YAML 1.2 booleans)."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML/JSON"
        raise DefinitionError([("", f"{source}: {problem}{where}")]) from None
    return data


def parse(text: str, source: str = "<document>") -> Definition:
    """Parse a YAML or JSON document (JSON is YAML) into a Definition."""
    return from_data(load(text, source))


class _Dumper(yaml.SafeDumper):
    """Quotes strings holding characters YAML reads as line breaks, so they survive a round trip."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if any(ch in value for ch in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(definition: Definition) -> str:
    return yaml.dump(definition.to_document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def to_json(definition: Definition) -> str:
    return json.dumps(definition.to_document(), indent=2)


def content_hash(definition: Definition) -> str:
    """Stable hash of the normalised document: equal content, equal hash."""
    canonical = json.dumps(definition.to_document(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
