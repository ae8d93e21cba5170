"""Python node callables: only functions defined in a module the operator listed, never what it imports.

A listed module ``mymod`` that did ``from os import system`` must not make ``mymod:system`` a node,
and listing ``mymod`` does not list ``mymod.sub``. At apply the check reads the module's source
(its top-level ``def``s) without importing it, so checking a definition runs none of the module's
code; at run the imported function must also say it was defined there (``__module__``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any


def check(spec: str, allowed: Sequence[str]) -> None:
    """Refuse ``module:function`` unless the module is listed and defines the function; raise ValueError."""
    module, _, name = spec.partition(":")
    _check_listed(module, allowed)
    if name not in _defined_functions(module):
        raise ValueError(f"{name!r} is not a function defined in module {module!r}")


def load(spec: str, allowed: Sequence[str]) -> Callable[..., Any]:
    """Import the function named by ``module:function`` after the same checks, and check it again."""
    check(spec, allowed)
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not inspect.isfunction(fn) or fn.__module__ != module:
        raise ValueError(f"{name!r} is not a function defined in module {module!r}")
    return fn


def _check_listed(module: str, allowed: Sequence[str]) -> None:
    if module not in allowed:  # exact: a listed package does not list its submodules
        shown = ", ".join(allowed) or "none"
        raise ValueError(f"module {module!r} is not allowed (WEFLOW_PYTHON_NODE_MODULES: {shown})")


def _defined_functions(module: str) -> frozenset[str]:
    try:
        found = importlib.util.find_spec(module)  # imports the parent packages only, not the module
    except Exception:
        found = None
    if found is None or not found.origin:
        raise ValueError(f"module {module!r} cannot be found")
    source = Path(found.origin)
    if source.suffix != ".py":
        raise ValueError(f"module {module!r} has no Python source to check ({source.name})")
    try:
        stat = source.stat()
        return _top_level_defs(str(source), stat.st_mtime_ns, stat.st_size)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"module {module!r} cannot be read ({type(exc).__name__})") from None


@lru_cache(maxsize=64)
def _top_level_defs(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse(Path(path).read_text(), filename=path)
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
