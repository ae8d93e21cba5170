"""Error types: every failure a user can see names what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class WeflowError(Exception):
    """Base class of every error weflow raises on purpose."""


class DefinitionError(WeflowError):
    """A definition document is wrong; ``problems`` pairs a document path with a message."""

    def __init__(self, problems: Sequence[tuple[str, str]], workflow: str | None = None) -> None:
        self.problems = list(problems)
        self.workflow = workflow
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        head = parts[0]
        if len(parts) > 1:
            head += f" (and {len(parts) - 1} more: " + "; ".join(parts[1:4])
            head += ", ...)" if len(parts) > 4 else ")"
        return head

    @property
    def path(self) -> str:
        """Path of the first problem, e.g. ``nodes[1].config.condition``."""
        return self.problems[0][0]


class CatalogError(WeflowError):
    """The catalog could not be read or written."""


class ServerError(WeflowError):
    """The Prefect server could not be reached or started."""


class DeployError(WeflowError):
    """A workflow could not be deployed or queued."""


class NotFoundError(WeflowError):
    """A workflow, version or execution does not exist (or is not visible to the caller)."""


class ConflictError(WeflowError):
    """The request conflicts with what is stored (for example a duplicate name)."""


class ContractError(WeflowError):
    """Data broke a contract; ``failure_cases`` holds the failing rows as plain records."""

    def __init__(
        self,
        message: str,
        *,
        workflow: str | None = None,
        node: str | None = None,
        failure_cases: list[dict[str, Any]] | None = None,
    ) -> None:
        self.workflow = workflow
        self.node = node
        self.failure_cases = failure_cases or []
        super().__init__(message)


class NodeError(WeflowError):
    """A node failed while running; names the node."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(f"node {node!r}: {message}")


class ExecutionTimeout(WeflowError):
    """An execution or node ran past its timeout."""


class OutboundError(WeflowError):
    """An outbound HTTP call (``http_json``, an alert webhook) failed; never carries the fetched body."""


class OutboundRefused(OutboundError):
    """An outbound HTTP call to a host the operator does not allow (``WEFLOW_OUTBOUND_ALLOW``)."""


class SecretError(WeflowError):
    """A secret name or value is refused, or a referenced secret is not set; names the secret, never a value."""


class SecretMissing(SecretError):
    """A secret a definition refers to is not set in its organization."""

    def __init__(self, name: str, organization: str) -> None:
        self.name = name
        super().__init__(f"secret {name!r} is not set in organization {organization!r} (weflow secrets set {name})")
