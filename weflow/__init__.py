"""weflow: workflows stored as data in DuckDB, compiled to Prefect flows over Polars frames."""

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

__all__ = [
    "Catalog",
    "CatalogError",
    "Column",
    "Connection",
    "Contract",
    "ContractError",
    "Definition",
    "DefinitionDiff",
    "DefinitionError",
    "Node",
    "NotFoundError",
    "WeflowError",
    "delete",
    "deploy_workflows",
    "diff",
    "executions",
    "export",
    "lineage",
    "list_workflows",
    "load",
    "parse",
    "preview",
    "rollback",
    "run",
    "save",
    "versions",
    "workflow",
]
