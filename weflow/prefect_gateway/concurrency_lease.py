"""A flow run's concurrency lease, first renewed when it needs it rather than the moment the run starts.

A deployment with a concurrency limit (a workflow's ``max_concurrent_runs``) holds a lease on its
slot while a flow run runs: the server takes it when the run goes Pending and renews it for the
grace period (at least 30 s, Prefect's floor for that setting) when the run goes Running. Prefect's
engine then starts a thread that makes a Prefect client and renews the lease at once, and again
every three quarters of 300 s. The first renewal repeats what the Running transition has just
done: one more write transaction on the server per run (1 of the ~11 requests of a hot run here),
and a client made per run in the worker. ``install`` makes the renewal thread of this process wait
before its first renewal (``first_renewal``: well inside the shortest lease the server grants), so
a run shorter than that renews nothing; a longer one is renewed as Prefect renews it.

Installed by the weflow worker in its own process only (``WeflowWorker.setup``), where flow runs
share an interpreter; a flow run in a process of its own keeps Prefect's behaviour.
"""

from __future__ import annotations

import threading
from uuid import UUID

from prefect.concurrency import _leases

SHORTEST_LEASE = 30.0  # seconds: the least the server renews a lease for (initial_deployment_lease_duration's floor)

_prefect_loop = _leases._lease_renewal_loop  # Prefect's own, taken before ``install`` replaces it


def first_renewal(lease_duration: float) -> float:
    """Seconds before a lease's first renewal: three quarters (Prefect's fraction) of the shortest it can have."""
    return _leases._RENEWAL_FRACTION * min(lease_duration, SHORTEST_LEASE)


def _renewed_later(lease_id: UUID, lease_duration: float, stop_event: threading.Event) -> None:
    """Prefect's renewal loop, from ``first_renewal`` on: nothing at all if the run ends first."""
    if stop_event.wait(first_renewal(lease_duration)):
        return
    _prefect_loop(lease_id, lease_duration, stop_event)


def install() -> None:
    """Use ``_renewed_later`` for every concurrency lease this process maintains from now on (idempotent)."""
    _leases._lease_renewal_loop = _renewed_later
