"""Secrets by reference: a config value ``{secret: NAME}`` stands for a value kept out of the definition.

The definition (and every version, export and diff of it) holds only the reference; the value lives in
a Prefect Secret block of the organization and is read when the node (or alert) runs. A field takes a
reference only where its type says so (``SecretText``, ``SecretParam``): that is how a node type marks
a config field secret. Names follow Prefect's block-name rule (lowercase letters, digits, dashes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Union
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, StringConstraints, Tag

SECRET_NAME = re.compile(r"^[a-z0-9-]{1,64}$")  # a Prefect block name ([a-z0-9-]), bounded


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a secret, or None."""
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        return f"secret name {name!r} must be 1 to 64 lowercase letters, digits and dashes (a Prefect block name)"
    return None


class SecretRef(BaseModel):
    """``{secret: NAME}``: the value of the organization's secret NAME, read when it is used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str

    def __str__(self) -> str:
        return f"{{secret: {self.secret}}}"


def as_reference(value: Any) -> Any:
    """Turn a ``{secret: NAME}`` mapping into a SecretRef with one clear error; leave anything else alone."""
    if isinstance(value, Mapping) and "secret" in value:
        if set(value) != {"secret"}:
            raise ValueError("a secret reference is {secret: NAME} and nothing else")
        problem = name_problem(value["secret"])
        if problem:
            raise ValueError(problem)
        return SecretRef(secret=value["secret"])
    return value


def _branch(value: Any) -> str:
    return "ref" if isinstance(value, SecretRef) else "str"  # "str": pydantic's errors name no branch (problems_from)


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Plain = str | int | float | bool
# a mapping becomes a reference first (as_reference); a wrong plain value then gets only the plain type's errors
SecretText = Annotated[  # a string, or a secret's value
    Union[Annotated[NonEmpty, Tag("str")], Annotated[SecretRef, Tag("ref")]],  # noqa: UP007
    Discriminator(_branch),
    BeforeValidator(as_reference),
]
URL = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
SecretURL = Annotated[  # an http(s) URL, or a secret's value (an alert's webhook)
    Union[Annotated[URL, Tag("str")], Annotated[SecretRef, Tag("ref")]],  # noqa: UP007
    Discriminator(_branch),
    BeforeValidator(as_reference),
]
SecretParam = Annotated[  # a query parameter, or a secret's value
    Union[Annotated[Plain, Tag("str")], Annotated[SecretRef, Tag("ref")]],  # noqa: UP007
    Discriminator(_branch),
    BeforeValidator(as_reference),
]


def references(value: Any) -> list[SecretRef]:
    """Every SecretRef in ``value`` (a config model, or the dicts, lists and tuples in it), in order."""
    if isinstance(value, SecretRef):
        return [value]
    if isinstance(value, BaseModel):
        return [r for name in type(value).model_fields for r in references(getattr(value, name))]
    if isinstance(value, Mapping):
        return [r for item in value.values() for r in references(item)]
    if isinstance(value, list | tuple):
        return [r for item in value for r in references(item)]
    return []


def revealed(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every SecretRef replaced by its value from ``values`` (a config model is copied)."""
    if isinstance(value, SecretRef):
        return values[value.secret]
    if isinstance(value, BaseModel):
        changed = {name: revealed(getattr(value, name), values) for name in type(value).model_fields}
        return value.model_copy(update={k: v for k, v in changed.items() if v is not getattr(value, k)})
    if isinstance(value, Mapping):
        return {key: revealed(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(revealed(item, values) for item in value)
    return value


def _spellings(value: str) -> set[str]:
    """How a value may show in a message: as is, quoted by repr, percent-encoded in a URL."""
    return {value, repr(value)[1:-1], quote(value, safe=""), quote_plus(value), quote(value)} - {""}


def scrub(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every spelling of every secret value in ``values`` replaced by its reference (longest first)."""
    found = [(spelling, name) for name, value in values.items() for spelling in _spellings(value)]
    for spelling, name in sorted(found, key=lambda item: -len(item[0])):
        text = text.replace(spelling, f"{{secret: {name}}}")
    return text
