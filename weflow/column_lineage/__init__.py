"""Column lineage of a workflow version: which source columns, through which transforms, feed each column.

Derived, not run: each node's output columns come from Polars (a lazy node's own function over
empty frames of its inputs' schemas, ``collect_schema``; a source's scan, whose schema Polars
reads without the data), from its contract where nothing else tells, and from sqlglot for a
``sql`` node. Each column's inputs come from the node's config: Polars parses every expression
(``meta.root_names``) and sqlglot qualifies a ``sql`` node's query against its inputs' columns
(``sqlglot.lineage``). Hops follow OpenLineage's column-lineage terms: DIRECT ones (IDENTITY,
TRANSFORMATION, AGGREGATION) feed a column; INDIRECT ones (FILTER, JOIN, GROUP_BY, SORT) decide
which rows a node keeps. A ``python`` node is opaque: a column it outputs is taken to come from
the input column of the same name. (Module named ``column_lineage``: ``weflow.lineage`` is the
notebook function, and a submodule of that name would shadow it.)
"""

from weflow.column_lineage.derive import for_workflow, of
from weflow.column_lineage.model import Hop, Lineage, NodeColumns, Origin, Ref

__all__ = ["Hop", "Lineage", "NodeColumns", "Origin", "Ref", "for_workflow", "of"]
