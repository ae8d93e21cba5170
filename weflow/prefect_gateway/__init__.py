"""The Prefect gateway: every call weflow's services make to Prefect goes through here.

- ``server``: the home's local Prefect server process (find, start once under a lock, stop), its
  workers' processes; ``supervisor``: the standard-library process that owns one server;
  ``prefect_server``: what it runs, ``prefect server start`` with SQLite's write transactions begun
  IMMEDIATE (they wait for the write lock instead of failing with a 503), in turn (queued in the process, first come
  first served), and a work pool's job-variable schema checked against JSON Schema once, not at each flow run.
- ``client``: Prefect's clients pointed at that server (``on_server``), ``run_flow`` for a compiled flow; their
  transport asks again within a fraction of a second after a 503 (Prefect's client waits ~2 s).
- ``states``: the one map from Prefect's flow-run states to weflow's.
- ``flow_runs``: create from a deployment, read states (of the runs that ended, a page at a time) and logs, cancel.
- ``deployments``: the entrypoint's deployments, work pool and queue, crash detection (a Prefect automation on the
  runs' heartbeats, from the first until the worker's ``WATCH_ENDED``; a worker's run in its threads sends its first
  half a heartbeat period in, so a short one is never watched).
- ``worker``: weflow's own worker type (``weflow``): flow runs inside a long-lived process, run by
  ``worker_serve`` (polls, wake-ups, health, signals);
  ``worker_home``: the home's records of those workers (wake-up port, runs in flight; those of a worker that died
  with its supervisor, ``orphans``, are ended by the next supervisor), no Prefect import;
  ``concurrency_lease``: in a worker, a run's concurrency lease first renewed when it needs it (not as it starts).

Outside this package only the compiled flow (``weflow.compile.flow``) and the run engine's tasks
(``weflow.engine``) import ``prefect`` (import-linter contracts). Importing the package or ``server``
does not import Prefect (~1.5 s), so commands that only manage the server stay fast. It knows the
core types and the config, never the catalog.
"""
