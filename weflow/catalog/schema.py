"""Catalog schema as forward-only migrations; ``schema_version`` records what was applied."""

from __future__ import annotations

# The metrics of every ended execution, counted as ``metrics.roll_up`` counts one (migration 6; bulk loads).
ROLL_UP_HISTORY = """
    CREATE TEMP VIEW _ended AS
    SELECT e.workflow_id, e.id, e.status, e.started_at, e.duration_ms,
           coalesce(make_timestamptz((epoch_us(e.started_at) // 3600000000) * 3600000000), 'epoch'::TIMESTAMPTZ) AS hour
    FROM workflow_executions e WHERE e.status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED');
    INSERT INTO execution_hours
    SELECT x.workflow_id, x.hour, count(*), count(*) FILTER (WHERE x.status = 'SUCCEEDED'),
           count(*) FILTER (WHERE x.status IN ('FAILED', 'TIMED_OUT')),
           sum((SELECT sum(n.rows_out) FROM node_executions n WHERE n.execution_id = x.id)),
           coalesce(sum((SELECT count(*) FROM contract_failures c WHERE c.execution_id = x.id)), 0), max(x.duration_ms)
    FROM _ended x GROUP BY ALL;
    INSERT INTO node_failure_hours
    SELECT x.workflow_id, x.hour, n.node, coalesce(e.error_type, n.status), count(*)
    FROM _ended x JOIN node_executions n ON n.execution_id = x.id JOIN workflow_executions e ON e.id = x.id
    WHERE n.status IN ('FAILED', 'TIMED_OUT') GROUP BY ALL;
    INSERT INTO recent_durations
    SELECT r.workflow_id, ((w.execution_count - r.k) % 1000 + 1000) % 1000, r.started_at, r.duration_ms
    FROM (SELECT x.*, row_number() OVER (PARTITION BY x.workflow_id ORDER BY e.finished_at DESC NULLS LAST, x.id) AS k
          FROM _ended x JOIN workflow_executions e ON e.id = x.id) r
    JOIN workflows w ON w.id = r.workflow_id WHERE r.k <= 1000;
    DROP VIEW _ended;
"""

# Every relation between the catalog's tables: (child table, child columns, parent table, parent columns). None is a
# declared foreign key (migration 10 says why): the repositories keep them, and ``weflow catalog check`` reports
# a child row whose parent is missing.
RELATIONS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("users", ("organization_id",), "organizations", ("id",)),
    ("workflows", ("organization_id",), "organizations", ("id",)),
    ("workflows", ("owner_id",), "users", ("id",)),
    ("workflows", ("id", "current_version"), "workflow_versions", ("workflow_id", "number")),
    ("workflow_versions", ("workflow_id",), "workflows", ("id",)),
    ("workflow_versions", ("author_id",), "users", ("id",)),
    ("workflow_nodes", ("workflow_id", "version"), "workflow_versions", ("workflow_id", "number")),
    ("workflow_node_connections", ("workflow_id", "version"), "workflow_versions", ("workflow_id", "number")),
    ("workflow_executions", ("workflow_id",), "workflows", ("id",)),
    ("workflow_executions", ("user_id",), "users", ("id",)),
    ("node_executions", ("execution_id",), "workflow_executions", ("id",)),
    ("contract_failures", ("execution_id",), "workflow_executions", ("id",)),
    ("api_keys", ("user_id",), "users", ("id",)),
    ("webhook_tokens", ("workflow_id",), "workflows", ("id",)),
    ("webhook_tokens", ("user_id",), "users", ("id",)),
    ("execution_resumes", ("execution_id",), "workflow_executions", ("id",)),
    ("execution_resumes", ("resumed_from",), "workflow_executions", ("id",)),
    ("compensations", ("execution_id",), "workflow_executions", ("id",)),
    ("alert_deliveries", ("workflow_id",), "workflows", ("id",)),
    ("execution_leases", ("execution_id",), "workflow_executions", ("id",)),
)

# Tables migration 10 makes again without foreign keys, parents before children.
REBUILT = (
    "organizations", "users", "workflows", "workflow_versions", "workflow_nodes", "workflow_node_connections",
    "workflow_executions", "node_executions", "contract_failures", "api_keys", "webhook_tokens", "execution_resumes",
    "compensations", "alert_deliveries",
)  # fmt: skip

MIGRATIONS: tuple[str, ...] = (
    # 1: definitions, versions, owners, executions
    """
    CREATE SEQUENCE organizations_id START 1;
    CREATE SEQUENCE users_id START 1;
    CREATE SEQUENCE workflows_id START 1;
    CREATE TABLE organizations (
        id INTEGER PRIMARY KEY DEFAULT nextval('organizations_id'),
        name VARCHAR NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY DEFAULT nextval('users_id'),
        name VARCHAR NOT NULL,
        organization_id INTEGER NOT NULL REFERENCES organizations (id),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (organization_id, name)
    );
    CREATE TABLE workflows (
        id INTEGER PRIMARY KEY DEFAULT nextval('workflows_id'),
        organization_id INTEGER NOT NULL REFERENCES organizations (id),
        name VARCHAR NOT NULL,
        description VARCHAR NOT NULL DEFAULT '',
        status VARCHAR NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'PAUSED', 'ARCHIVED')),
        configuration JSON NOT NULL DEFAULT '{}',
        is_active BOOLEAN NOT NULL DEFAULT true,
        execution_count INTEGER NOT NULL DEFAULT 0,
        last_executed_at TIMESTAMPTZ,
        owner_id INTEGER NOT NULL REFERENCES users (id),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        current_version INTEGER NOT NULL,
        deleted_at TIMESTAMPTZ
    );
    CREATE TABLE workflow_versions (
        workflow_id INTEGER NOT NULL REFERENCES workflows (id),
        number INTEGER NOT NULL,
        definition JSON NOT NULL,
        content_hash VARCHAR NOT NULL,
        author_id INTEGER NOT NULL REFERENCES users (id),
        message VARCHAR NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (workflow_id, number)
    );
    CREATE TABLE workflow_nodes (
        workflow_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        config JSON NOT NULL,
        retries INTEGER NOT NULL,
        retry_delay_seconds DOUBLE NOT NULL,
        timeout_seconds DOUBLE,
        contract JSON,
        position_x DOUBLE,
        position_y DOUBLE,
        PRIMARY KEY (workflow_id, version, name),
        FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, number)
    );
    CREATE TABLE workflow_node_connections (
        workflow_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        source_node VARCHAR NOT NULL,
        source_port VARCHAR NOT NULL,
        target_node VARCHAR NOT NULL,
        target_port VARCHAR,
        PRIMARY KEY (workflow_id, version, idx),
        FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, number)
    );
    CREATE TABLE workflow_executions (
        id VARCHAR PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflows (id),
        version INTEGER NOT NULL,
        mode VARCHAR NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users (id),
        status VARCHAR NOT NULL,
        input_data JSON,
        flow_run_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        duration_ms DOUBLE,
        error_type VARCHAR,
        error_message VARCHAR,
        error_node VARCHAR,
        output JSON,
        timeout_seconds DOUBLE
    );
    CREATE TABLE node_executions (
        execution_id VARCHAR NOT NULL REFERENCES workflow_executions (id),
        node VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        rows_in BIGINT,
        rows_out BIGINT,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        duration_ms DOUBLE,
        error VARCHAR,
        contract JSON,
        fused_group VARCHAR,
        output_path VARCHAR,
        PRIMARY KEY (execution_id, node)
    );
    CREATE TABLE contract_failures (
        execution_id VARCHAR NOT NULL REFERENCES workflow_executions (id),
        node VARCHAR NOT NULL,
        column_name VARCHAR,
        check_name VARCHAR,
        failure_case VARCHAR,
        row_index BIGINT
    );
    CREATE TABLE node_outputs (
        content_hash VARCHAR PRIMARY KEY,
        path VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX workflows_org_name ON workflows (organization_id, name);
    CREATE INDEX executions_workflow ON workflow_executions (workflow_id);
    """,
    # 2: API keys of users and webhook tokens of workflows, stored as sha256 hashes of their secrets
    """
    CREATE SEQUENCE api_keys_id START 1;
    CREATE SEQUENCE webhook_tokens_id START 1;
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY DEFAULT nextval('api_keys_id'),
        user_id INTEGER NOT NULL REFERENCES users (id),
        lookup VARCHAR NOT NULL UNIQUE,
        secret_hash VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ
    );
    CREATE TABLE webhook_tokens (
        id INTEGER PRIMARY KEY DEFAULT nextval('webhook_tokens_id'),
        workflow_id INTEGER NOT NULL REFERENCES workflows (id),
        user_id INTEGER NOT NULL REFERENCES users (id),
        lookup VARCHAR NOT NULL UNIQUE,
        secret_hash VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ
    );
    """,
    # 3: metric views, queryable from DuckDB directly
    """
    CREATE VIEW execution_metrics AS
    SELECT w.organization_id, w.name AS workflow, e.workflow_id, e.id AS execution_id, e.version, e.mode,
           e.status, e.created_at, e.started_at, e.finished_at, e.duration_ms, e.error_type, e.error_node,
           (SELECT count(*) FROM contract_failures c WHERE c.execution_id = e.id) AS contract_failures,
           (SELECT sum(n.rows_out) FROM node_executions n WHERE n.execution_id = e.id) AS rows_out
    FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id;

    CREATE VIEW workflow_stats AS
    SELECT organization_id, workflow,
           count(*) AS runs,
           count(*) FILTER (WHERE status = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')) AS failed,
           count(*) FILTER (WHERE status = 'SUCCEEDED') / count(*) AS success_rate,
           quantile_cont(duration_ms, 0.5) AS p50_ms,
           quantile_cont(duration_ms, 0.95) AS p95_ms,
           max(duration_ms) AS max_ms,
           sum(rows_out) AS rows_out,
           sum(contract_failures) AS contract_failures,
           max(started_at) AS last_started_at
    FROM execution_metrics
    WHERE status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')
    GROUP BY organization_id, workflow;

    CREATE VIEW node_failures AS
    SELECT w.organization_id, w.name AS workflow, n.node, e.error_type, count(*) AS failures,
           max(n.finished_at) AS last_failed_at
    FROM node_executions n
    JOIN workflow_executions e ON e.id = n.execution_id
    JOIN workflows w ON w.id = e.workflow_id
    WHERE n.status IN ('FAILED', 'TIMED_OUT')
    GROUP BY ALL;
    """,
    # 4: error recovery and alerts: resumed executions, compensations run, alert deliveries
    """
    CREATE TABLE execution_resumes (
        execution_id VARCHAR PRIMARY KEY REFERENCES workflow_executions (id),
        resumed_from VARCHAR NOT NULL REFERENCES workflow_executions (id),
        from_node VARCHAR
    );
    CREATE TABLE compensations (
        execution_id VARCHAR NOT NULL REFERENCES workflow_executions (id),
        seq INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        detail VARCHAR,
        done_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE alert_deliveries (
        workflow_id INTEGER NOT NULL REFERENCES workflows (id),
        subject VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error VARCHAR,
        payload JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        delivered_at TIMESTAMPTZ,
        PRIMARY KEY (subject, rule)
    );
    """,
    # 5: the lease of the process running an unfinished execution (deleted when the execution ends).
    # No foreign key: DuckDB checks one against rows deleted earlier in the same transaction (Catalog.delete).
    """
    CREATE TABLE execution_leases (
        execution_id VARCHAR PRIMARY KEY,
        host VARCHAR NOT NULL,
        pid INTEGER NOT NULL,
        process_started BIGINT NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        lease_seconds DOUBLE NOT NULL
    );
    """,
    # 6: constant-cost reads as history grows (issue 16). Metrics are kept per workflow and UTC hour when an
    # execution ends (execution_hours, node_failure_hours), with its duration in a ring of the last 1,000
    # (recent_durations): `weflow stats` reads no execution row, and at most one row per workflow and hour.
    # No index: DuckDB chose a sequential scan over an ART index on status or created_at for every query
    # here, and an UPDATE of an indexed status broke the node executions' foreign key (DuckDB updates an
    # indexed column as delete + insert). No foreign keys: DuckDB checks one against rows deleted earlier in
    # the same transaction. Hour 1970-01-01 holds executions that never started. Existing history is rolled
    # up here, once. retention_runs: when prune last ran (``weflow sync`` prunes when one is due).
    """
    CREATE TABLE execution_hours (
        workflow_id INTEGER NOT NULL,
        hour TIMESTAMPTZ NOT NULL,
        runs BIGINT NOT NULL,
        succeeded BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        rows_out BIGINT,
        contract_failures BIGINT NOT NULL,
        max_ms DOUBLE,
        PRIMARY KEY (workflow_id, hour)
    );
    CREATE TABLE node_failure_hours (
        workflow_id INTEGER NOT NULL,
        hour TIMESTAMPTZ NOT NULL,
        node VARCHAR NOT NULL,
        error_type VARCHAR NOT NULL,
        failures BIGINT NOT NULL,
        PRIMARY KEY (workflow_id, hour, node, error_type)
    );
    CREATE TABLE recent_durations (
        workflow_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        started_at TIMESTAMPTZ,
        duration_ms DOUBLE,
        PRIMARY KEY (workflow_id, slot)
    );
    CREATE TABLE retention_runs (
        id INTEGER PRIMARY KEY,
        finished_at TIMESTAMPTZ NOT NULL
    );
    """
    + ROLL_UP_HISTORY,
    # 7: backfills of a scheduled workflow over past intervals (issue 18). A slot (workflow, interval_start) is
    # one row whatever backfill queued it last, so a second backfill of a range finds it and makes no duplicate.
    # status is the slot's own (PENDING: not queued yet) until it has an execution, then that execution's last
    # known one. No foreign keys (see 6): retention may remove a slot's execution, the slot keeps its status.
    """
    CREATE TABLE backfills (
        id VARCHAR PRIMARY KEY,
        organization_id INTEGER NOT NULL,
        workflow_id INTEGER NOT NULL,
        start_at TIMESTAMPTZ NOT NULL,
        end_at TIMESTAMPTZ NOT NULL,
        max_parallel INTEGER NOT NULL,
        rerun BOOLEAN NOT NULL,
        slots INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        created_by INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ
    );
    CREATE TABLE backfill_slots (
        workflow_id INTEGER NOT NULL,
        interval_start TIMESTAMPTZ NOT NULL,
        interval_end TIMESTAMPTZ NOT NULL,
        backfill_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        execution_id VARCHAR,
        error VARCHAR,
        PRIMARY KEY (workflow_id, interval_start)
    );
    """,
    # 8: pinned samples of source nodes (issue 19 item 1, ``catalog.samples``): one row per workflow and source.
    # IF NOT EXISTS: a catalog migrated again from an earlier number keeps its pins. No foreign keys (see 6).
    """
    CREATE TABLE IF NOT EXISTS sample_pins (
        workflow_id INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        source_hash VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        columns JSON NOT NULL,
        version INTEGER NOT NULL,
        execution_id VARCHAR,
        pinned_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (workflow_id, node)
    );
    """,
    # 9: incremental loads (issue 21 item 4, ``catalog.cursors``): where each incremental source of a workflow got
    # to (moved only in the transaction that ends a SUCCEEDED run, or by ``weflow cursors reset``), and the window
    # every run read (a resumed run reads from its own start). IF NOT EXISTS and no foreign keys: see 8 and 6.
    """
    CREATE TABLE IF NOT EXISTS cursors (
        organization_id INTEGER NOT NULL,
        workflow_id INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        column_name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL CHECK (kind IN ('integer', 'date', 'timestamp')),
        value VARCHAR NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        execution_id VARCHAR,
        PRIMARY KEY (workflow_id, node)
    );
    CREATE TABLE IF NOT EXISTS execution_cursors (
        execution_id VARCHAR NOT NULL,
        node VARCHAR NOT NULL,
        column_name VARCHAR NOT NULL,
        kind VARCHAR,
        start_value VARCHAR,
        end_value VARCHAR,
        mode VARCHAR NOT NULL,
        PRIMARY KEY (execution_id, node)
    );
    """,
    # 10: no foreign keys (issue 17). DuckDB 2.0.1 keeps more catalog metadata after every committed write session
    # of a file whose tables declare foreign keys (pragma_metadata_info: +1 block of 4 KiB per ~20 sessions with one
    # parent referenced by five tables; ForeignKeyConstraint::Deserialize in a profile of ATTACH), and reads all of it
    # on every ATTACH: an empty session cost 4 ms on a fresh catalog and 170 ms after 600 runs, and COPY FROM DATABASE
    # carries it over. Every table that declared or was the target of one is made again without it (rows, keys,
    # checks, defaults and indexes kept); the relations live on as ``RELATIONS``, which ``weflow catalog check``
    # checks, and the repositories delete children before parents as before.
    """
    CREATE TABLE organizations_v10 (
        id INTEGER PRIMARY KEY DEFAULT nextval('organizations_id'),
        name VARCHAR NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE users_v10 (
        id INTEGER PRIMARY KEY DEFAULT nextval('users_id'),
        name VARCHAR NOT NULL,
        organization_id INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (organization_id, name)
    );
    CREATE TABLE workflows_v10 (
        id INTEGER PRIMARY KEY DEFAULT nextval('workflows_id'),
        organization_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        description VARCHAR NOT NULL DEFAULT '',
        status VARCHAR NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'PAUSED', 'ARCHIVED')),
        configuration JSON NOT NULL DEFAULT '{}',
        is_active BOOLEAN NOT NULL DEFAULT true,
        execution_count INTEGER NOT NULL DEFAULT 0,
        last_executed_at TIMESTAMPTZ,
        owner_id INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        current_version INTEGER NOT NULL,
        deleted_at TIMESTAMPTZ
    );
    CREATE TABLE workflow_versions_v10 (
        workflow_id INTEGER NOT NULL,
        number INTEGER NOT NULL,
        definition JSON NOT NULL,
        content_hash VARCHAR NOT NULL,
        author_id INTEGER NOT NULL,
        message VARCHAR NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (workflow_id, number)
    );
    CREATE TABLE workflow_nodes_v10 (
        workflow_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        config JSON NOT NULL,
        retries INTEGER NOT NULL,
        retry_delay_seconds DOUBLE NOT NULL,
        timeout_seconds DOUBLE,
        contract JSON,
        position_x DOUBLE,
        position_y DOUBLE,
        PRIMARY KEY (workflow_id, version, name)
    );
    CREATE TABLE workflow_node_connections_v10 (
        workflow_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        source_node VARCHAR NOT NULL,
        source_port VARCHAR NOT NULL,
        target_node VARCHAR NOT NULL,
        target_port VARCHAR,
        PRIMARY KEY (workflow_id, version, idx)
    );
    CREATE TABLE workflow_executions_v10 (
        id VARCHAR PRIMARY KEY,
        workflow_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        mode VARCHAR NOT NULL,
        user_id INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        input_data JSON,
        flow_run_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        duration_ms DOUBLE,
        error_type VARCHAR,
        error_message VARCHAR,
        error_node VARCHAR,
        output JSON,
        timeout_seconds DOUBLE
    );
    CREATE TABLE node_executions_v10 (
        execution_id VARCHAR NOT NULL,
        node VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        rows_in BIGINT,
        rows_out BIGINT,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        duration_ms DOUBLE,
        error VARCHAR,
        contract JSON,
        fused_group VARCHAR,
        output_path VARCHAR,
        PRIMARY KEY (execution_id, node)
    );
    CREATE TABLE contract_failures_v10 (
        execution_id VARCHAR NOT NULL,
        node VARCHAR NOT NULL,
        column_name VARCHAR,
        check_name VARCHAR,
        failure_case VARCHAR,
        row_index BIGINT
    );
    CREATE TABLE api_keys_v10 (
        id INTEGER PRIMARY KEY DEFAULT nextval('api_keys_id'),
        user_id INTEGER NOT NULL,
        lookup VARCHAR NOT NULL UNIQUE,
        secret_hash VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ
    );
    CREATE TABLE webhook_tokens_v10 (
        id INTEGER PRIMARY KEY DEFAULT nextval('webhook_tokens_id'),
        workflow_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        lookup VARCHAR NOT NULL UNIQUE,
        secret_hash VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ
    );
    CREATE TABLE execution_resumes_v10 (
        execution_id VARCHAR PRIMARY KEY,
        resumed_from VARCHAR NOT NULL,
        from_node VARCHAR
    );
    CREATE TABLE compensations_v10 (
        execution_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        detail VARCHAR,
        done_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE alert_deliveries_v10 (
        workflow_id INTEGER NOT NULL,
        subject VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error VARCHAR,
        payload JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        delivered_at TIMESTAMPTZ,
        PRIMARY KEY (subject, rule)
    );
    """
    + "".join(f"INSERT INTO {t}_v10 BY NAME SELECT * FROM {t};\n" for t in REBUILT)
    + "".join(f"DROP TABLE {t};\n" for t in reversed(REBUILT))  # children first
    + "".join(f"ALTER TABLE {t}_v10 RENAME TO {t};\n" for t in REBUILT)
    + """
    CREATE INDEX workflows_org_name ON workflows (organization_id, name);
    CREATE INDEX executions_workflow ON workflow_executions (workflow_id);
    """,
)
