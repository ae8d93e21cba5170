"""Data diff between two versions of a workflow: what each node outputs differently on the same input.

``runner.for_versions`` runs both versions in this process on one bounded read of the sources (or
on pinned samples), never writing a sink, and ``compare`` (pure Polars joins) reports per shared
node: rows added, removed and changed (matched on a key, or as multisets), columns added or
removed, dtypes and values changed, with a few example rows. ``DataDiff`` is the one result model
the CLI, the notebook and the REST API share. The runner is not imported here: it imports the
engine (and Prefect, ~1.5 s), which the model's users do not need.
"""

from weflow.data_diff.compare import compare
from weflow.data_diff.model import ChangedRow, DataDiff, Examples, NodeDiff, TypeChange

__all__ = ["ChangedRow", "DataDiff", "Examples", "NodeDiff", "TypeChange", "compare"]
