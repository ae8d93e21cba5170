"""weflow: workflows stored as data in DuckDB, compiled to Prefect flows over Polars frames.

The names below are imported when first used (PEP 562), so ``import weflow.config`` or the
CLI's hand-off of a run (``weflow run NAME`` with a worker up) pays for neither Polars, DuckDB
nor Prefect; ``import weflow; weflow.preview(...)`` works as before.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from weflow.catalog import Catalog
    from weflow.core.builder import workflow
    from weflow.core.diff import DefinitionDiff
    from weflow.core.document import parse
    from weflow.core.model import Column, Connection, Contract, Definition, Node
    from weflow.errors import CatalogError, ContractError, DefinitionError, NotFoundError, WeflowError
    from weflow.notebook import (
        delete,
        deploy_workflows,
        diff,
        executions,
        export,
        lineage,
        list_workflows,
        load,
        preview,
        rollback,
        run,
        save,
        versions,
    )

_WHERE = {
    "weflow.catalog": ("Catalog",),
    "weflow.core.builder": ("workflow",),
    "weflow.core.diff": ("DefinitionDiff",),
    "weflow.core.document": ("parse",),
    "weflow.core.model": ("Column", "Connection", "Contract", "Definition", "Node"),
    "weflow.errors": ("CatalogError", "ContractError", "DefinitionError", "NotFoundError", "WeflowError"),
    "weflow.notebook": ("delete", "deploy_workflows", "diff", "executions", "export", "lineage", "list_workflows",
                        "load", "preview", "rollback", "run", "save", "versions"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "Catalog", "CatalogError", "Column", "Connection", "Contract", "ContractError", "Definition", "DefinitionDiff",
    "DefinitionError", "Node", "NotFoundError", "WeflowError", "delete", "deploy_workflows", "diff", "executions",
    "export", "lineage", "list_workflows", "load", "parse", "preview", "rollback", "run", "save", "versions",
    "workflow",
]  # fmt: skip
assert set(__all__) == set(_MODULE_OF)


def __getattr__(name: str) -> _typing.Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'weflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # once: the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if n.startswith("_")), *__all__})
