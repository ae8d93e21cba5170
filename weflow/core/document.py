"""Definition documents in YAML or JSON: parse with precise paths, dump normalised, hash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from weflow.core.model import Definition
from weflow.errors import DefinitionError

MAX_BYTES_ENV = "WEFLOW_MAX_DEFINITION_BYTES"
DEFAULT_MAX_BYTES = 1 << 20  # as the API's default body limit: a large definition is a few kB
MAX_DEPTH = 64  # a definition nests about 6 levels; deeper is a mistake or an attack


class _Refused(yaml.YAMLError):
    """A construct weflow refuses while composing YAML: where it is and why."""

    def __init__(self, path: Sequence[str | int], problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.path = format_path([p for p in path if p != ""])  # "" stands for a mapping key
        self.problem = problem
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans (a key like ``on:`` stays the string "on"), refusing
    aliases (a 700-byte "billion laughs" expands to gigabytes), repeated keys and nesting past
    MAX_DEPTH (the composer recurses: 10,000 levels ended in RecursionError), each with its path.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | int] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # index: the key node of a mapping's value, the position in a sequence, None for a key
        part = index.value if isinstance(index, ScalarNode) else index
        self._path.append(part if isinstance(part, str | int) else "")
        try:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            if self.check_event(AliasEvent):
                raise _Refused(self._path[1:], "YAML aliases (*name) are not allowed: write the value out", mark)
            if len(self._path) > MAX_DEPTH + 1 and self._path[-1] != "":  # a key sits at its value's depth
                raise _Refused(self._path[1:], f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode):
                if (key.tag, key.value) in seen:
                    raise _Refused(self._path[1:], f"duplicate key {key.value!r}", key.start_mark)
                seen.add((key.tag, key.value))
        return node


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
    """Validate plain data (already parsed from YAML/JSON, or built in code) into a Definition."""
    if not isinstance(data, Mapping):
        raise DefinitionError([("", "a definition must be a mapping with name and nodes")])
    _check_depth(data)
    try:
        return Definition.model_validate(dict(data))
    except ValidationError as exc:
        raise DefinitionError(problems_from(exc), workflow=_name_of(data)) from None


def _name_of(data: Mapping[str, Any]) -> str | None:
    name = data.get("name")
    return name if isinstance(name, str) else None


def max_bytes(environ: Mapping[str, str]) -> int:
    """The largest definition file in bytes: WEFLOW_MAX_DEFINITION_BYTES, else 1 MiB."""
    text = environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    if not text.isdigit() or int(text) < 1:
        raise DefinitionError([("", f"{MAX_BYTES_ENV}={text!r}: must be a positive number of bytes")])
    return int(text)


def _text(raw: str | bytes, source: str, limit: int) -> str:
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise DefinitionError([("", f"{source}: over the limit of {limit} bytes ({MAX_BYTES_ENV})")])
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([("", f"{source}: not UTF-8 at byte {exc.start}")]) from None


def load(text: str | bytes, source: str = "<document>", limit: int = DEFAULT_MAX_BYTES) -> Any:
    """Plain data from YAML or JSON text (YAML 1.2 booleans); refused unparsed over ``limit`` bytes."""
    text = _text(text, source, limit)
    try:
        data = yaml.load(text, Loader=_Loader)
    except _Refused as exc:
        where = f"{source}, line {exc.mark.line + 1}, column {exc.mark.column + 1}"
        raise DefinitionError([(exc.path, f"{exc.problem} ({where})")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML/JSON"
        raise DefinitionError([("", f"{source}: {problem}{where}")]) from None
    except ValueError as exc:  # a constructor's: an int of 5,000 digits, a date like 2026-13-01
        raise DefinitionError([("", f"{source}: {exc}")]) from None
    return data


def parse(text: str | bytes, source: str = "<document>", limit: int = DEFAULT_MAX_BYTES) -> Definition:
    """Parse a YAML or JSON document (JSON is YAML) of at most ``limit`` bytes into a Definition."""
    return from_data(load(text, source, limit))


class _Duplicated(dict[str, Any]):
    """A JSON object that repeated ``key``: kept so that its path can be named."""

    key = ""


def loads_json(text: str, **options: Any) -> Any:
    """``json.loads`` refusing a repeated key with its path (ValueError), as the YAML reader does."""
    repeated: list[_Duplicated] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        dup, seen = _Duplicated(obj), set()
        for key, _ in items:
            if key in seen:
                dup.key = key
                break
            seen.add(key)
        repeated.append(dup)
        return dup

    data = json.loads(text, object_pairs_hook=pairs, **options)
    if repeated:
        path, found = _first(data, lambda value: isinstance(value, _Duplicated))
        where = format_path(path)
        raise ValueError(f"{where + ': ' if where else ''}duplicate key {found.key!r}")
    return data


def _children(value: Any) -> Iterable[tuple[str | int, Any]]:
    if isinstance(value, Mapping):
        return value.items()
    if isinstance(value, list | tuple):
        return enumerate(value)
    return ()


def _first(data: Any, hit: Callable[[Any], bool]) -> tuple[list[str | int], Any]:
    """The first value (in document order) for which ``hit`` is true, with its path; iterative."""
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while todo:
        path, value = todo.pop()
        if hit(value):
            return list(path), value
        todo.extend(reversed([((*path, key), child) for key, child in _children(value)]))
    return [], None


def _check_depth(data: Any) -> None:
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while todo:
        path, value = todo.pop()
        if len(path) > MAX_DEPTH:
            raise DefinitionError([(format_path(path), f"nested deeper than {MAX_DEPTH} levels")])
        todo.extend(((*path, key), child) for key, child in _children(value))


class _Dumper(yaml.SafeDumper):
    """Quotes strings holding characters YAML reads as line breaks, so they survive a round trip;
    writes no aliases (``load`` refuses them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


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
