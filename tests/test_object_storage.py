"""s3:// sources and sinks against moto's standalone S3 server on loopback, with IAM checking keys:
a workflow reading Parquet and CSV and writing Parquet, the bucket allow-list at apply and at run,
unreachable endpoint, bad credentials, missing objects, and sinks that fail leaving the old object."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import polars as pl
import pytest
from moto.server import ThreadedMotoServer
from polars.testing import assert_frame_equal

from tests.conftest import web
from weflow import DefinitionError, accounts, config, parse, secrets, workflows
from weflow.core.secret_ref import SecretRef, revealed
from weflow.errors import OutboundError
from weflow.execution import run
from weflow.nodes import objectstore
from weflow.nodes.base import Inbound, NodeInputs, RunContext
from weflow.nodes.registry import node_type
from weflow.nodes.stop import Stop
from weflow.workflows import Scope

ORDERS = pl.DataFrame({"id": [1, 2, 3, 4], "region": ["n", "s", "n", "e"], "amount": [10.0, 20.0, 30.0, 5.0]})
REGIONS = pl.DataFrame({"region": ["n", "s", "e"], "name": ["North", "South", "East"]})
FLOW = """
name: s3_flow
nodes:
  - {name: orders, type: read_parquet, config: {path: "s3://lake/in/orders.parquet", credentials: {secret: lake-keys}}}
  - {name: regions, type: read_csv, config: {path: "s3://lake/in/*.csv", credentials: {secret: lake-keys}}}
  - {name: joined, type: join, config: {on: region}}
  - {name: totals, type: aggregate, config: {by: [name], aggs: {total: "sum(amount)"}}}
  - {name: ordered, type: sort, config: {by: [name]}}
  - name: out
    type: write_parquet
    config: {path: "s3://lake/out/totals.parquet", credentials: {secret: lake-keys}}
connections:
  - {from: orders, to: joined.left}
  - {from: regions, to: joined.right}
  - {from: joined, to: totals}
  - {from: totals, to: ordered}
  - {from: ordered, to: out}
"""


@dataclass(frozen=True)
class S3:
    endpoint: str
    key_id: str
    secret: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def keys(self, bucket: str = "lake") -> list[str]:
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=bucket).get("Contents", [])]

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket="lake", Key=key)["Body"].read()
        return body

    def put(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket="lake", Key=key, Body=body)


def parquet(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 on a free loopback port; buckets lake and other; from then on only IAM user ada's key works."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boot = {"endpoint_url": endpoint, "aws_access_key_id": "boot", "aws_secret_access_key": "boot"}
    iam = boto3.client("iam", region_name="us-east-1", **boot)
    iam.create_user(UserName="ada")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="ada", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="ada")["AccessKey"]
    for bucket in ("lake", "other"):
        boto3.client("s3", region_name="us-east-1", **boot).create_bucket(Bucket=bucket)
    web.post(f"{endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()  # keys are checked from now on
    found = S3(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    found.put("in/orders.parquet", parquet(ORDERS))
    found.put("in/regions.csv", REGIONS.write_csv().encode())
    try:
        yield found
    finally:
        web.post(f"{endpoint}/moto-api/reset-auth", content=b"inf")
        server.stop()


@pytest.fixture
def store(s3: S3, settings: config.Settings, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The operator's configuration: the endpoint, bucket lake open, ada's key in AWS_*, no retries."""
    monkeypatch.setenv("WEFLOW_S3_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("WEFLOW_S3_BUCKETS", "lake")
    monkeypatch.setenv("WEFLOW_S3_MAX_RETRIES", "0")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    return s3


def read(kind: str, path: str, secret: str | None = None, organization: str | None = None) -> pl.DataFrame:
    cfg = node_type(kind).config.model_validate({"path": path})
    if secret is not None:
        cfg = revealed(cfg.model_copy(update={"credentials": SecretRef(secret="k")}), {"k": secret})
    frame = node_type(kind).run(cfg, NodeInputs(), RunContext("w", "src", organization=organization))
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def write(kind: str, path: str, frame: pl.LazyFrame | pl.DataFrame, secret: str | None = None, **ctx: Any) -> None:
    cfg = node_type(kind).config.model_validate({"path": path})
    if secret is not None:
        cfg = cfg.model_copy(update={"credentials": secret})  # as the engine leaves it: the value read
    inputs = NodeInputs((Inbound("up", "in", frame.lazy()),))
    node_type(kind).run(cfg, inputs, RunContext("w", "sink", **ctx))


def check(document: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as err:
        workflows.check(parse(document))
    return err.value


def test_parquet_csv_and_ndjson_read_and_written_with_the_operator_s_keys(store: S3) -> None:
    assert_frame_equal(read("read_parquet", "s3://lake/in/orders.parquet"), ORDERS)
    assert_frame_equal(read("read_csv", "s3://lake/in/regions.csv"), REGIONS)
    write("write_csv", "s3://lake/tmp/orders.csv", ORDERS)
    assert_frame_equal(read("read_csv", "s3://lake/tmp/*.csv"), ORDERS)
    store.put("tmp/orders.ndjson", ORDERS.write_ndjson().encode())
    assert_frame_equal(read("read_ndjson", "s3://lake/tmp/orders.ndjson"), ORDERS)
    write("write_parquet", "s3://lake/tmp/orders.parquet", ORDERS.lazy())
    assert_frame_equal(pl.read_parquet(store.get("tmp/orders.parquet")), ORDERS)


@pytest.mark.usefixtures("prefect_api")
def test_a_workflow_reads_parquet_and_csv_and_writes_parquet_with_a_secret_s_keys(
    store: S3, scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # the node's secret, not the operator's keys
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    value = json.dumps({"aws_access_key_id": store.key_id, "aws_secret_access_key": store.secret})
    secrets.set_value(scope, "lake-keys", value)
    workflows.apply(parse(FLOW), scope)
    result = run("s3_flow", scope)
    assert result.ok, result.execution.error_message
    expected = pl.DataFrame({"name": ["East", "North", "South"], "total": [5.0, 40.0, 20.0]})
    assert_frame_equal(pl.read_parquet(store.get("out/totals.parquet")), expected)
    secrets.set_value(scope, "lake-keys", value.replace(store.secret, "WRONG" + store.secret[5:]))
    failed = run("s3_flow", scope)
    message = failed.execution.error_message or ""
    assert not failed.ok and failed.execution.error_node == "orders"
    assert "s3://lake/in/orders.parquet: the object store refused the credentials (SignatureDoesNotMatch)" in message
    assert store.secret[5:] not in message and "\n" not in message


def test_a_bucket_off_the_allow_list_is_refused_at_apply_and_at_run(
    store: S3, scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = FLOW.replace("s3://lake/out/", "s3://other/out/")
    with pytest.raises(DefinitionError) as err:
        workflows.apply(parse(flow), scope)
    assert str(err.value) == "nodes[5].config.path: bucket 'other' is not allowed (see WEFLOW_S3_BUCKETS)"
    assert workflows.list_workflows(scope) == []
    monkeypatch.setenv("WEFLOW_S3_BUCKETS", "other")  # open at apply, closed by the time it runs
    with pytest.raises(ValueError, match=r"^path: bucket 'lake' is not allowed \(see WEFLOW_S3_BUCKETS\)$"):
        read("read_parquet", "s3://lake/in/orders.parquet")
    with pytest.raises(ValueError, match=r"^path: bucket 'lake' is not allowed"):
        write("write_parquet", "s3://lake/out/x.parquet", ORDERS)
    assert "out/x.parquet" not in store.keys()
    monkeypatch.delenv("WEFLOW_S3_BUCKETS")
    assert check(FLOW).path == "nodes[0].config.path"  # no bucket is open unless the operator opens it


def test_key_prefixes_per_organization(store: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFLOW_S3_BUCKETS", "lake/{organization}/data")
    write("write_parquet", "s3://lake/acme/data/o.parquet", ORDERS)  # the settings' organization is acme
    assert_frame_equal(read("read_parquet", "s3://lake/acme/data/*.parquet"), ORDERS)
    for path in ("s3://lake/beta/data/o.parquet", "s3://lake/acme/data*/o.parquet", "s3://lake/*/data/o.parquet"):
        with pytest.raises(ValueError, match=r"is outside the key prefixes open in bucket 'lake' \('acme/data/'\)"):
            read("read_parquet", path)
    with pytest.raises(ValueError, match=r"outside the key prefixes open in bucket 'lake' \('beta/data/'\)"):
        read("read_parquet", "s3://lake/acme/data/o.parquet", organization="beta")  # the run's organization
    with config.using(organization="beta"):  # no organization given: the settings'
        with pytest.raises(ValueError, match="outside the key prefixes"):
            read("read_parquet", "s3://lake/acme/data/o.parquet")
        with pytest.raises(ValueError, match="outside the key prefixes"):
            write("write_parquet", "s3://lake/acme/data/o.parquet", ORDERS)
    with pytest.raises(ValueError, match=r"^path: bucket 'lake' is not allowed"):
        read("read_parquet", "s3://lake/acme/data/o.parquet", organization="..")  # a name that would step out


@pytest.mark.parametrize(
    ("node", "path", "expect"),
    [
        ("read_csv", "gs://lake/a.csv", "nodes[0].config.path: gs:// URLs are not supported"),
        ("read_csv", "http://127.0.0.1/a.csv", "nodes[0].config.path: http:// URLs are not supported"),
        ("read_parquet", "file:///etc/passwd", "nodes[0].config.path: file:// URLs are not supported"),
        ("read_csv", "s3:///a.csv", "nodes[0].config.path: 's3:///a.csv' names no bucket"),
        ("read_csv", "s3://lake", "nodes[0].config.path: 's3://lake' names no object key"),
        ("read_csv", "s3://Lake_1/a.csv", "nodes[0].config.path: bucket 'Lake_1' is not a valid bucket name"),
        ("read_csv", "s3://lake/in/../../x.csv", "nodes[0].config.path: 's3://lake/in/../../x.csv' must not contain"),
        ("read_csv", "s3://lake/in//x.csv", "a key segment is empty, '.' or holds a NUL character"),
        ("read_csv", "s3://lake/" + "k" * 1025, "nodes[0].config.path: the object key is over 1024 bytes"),
        ("read_csv", "s3://AKIA:topsecret@lake/a.csv", "an s3:// URL must not carry credentials or a port"),
        ("read_excel", "s3://lake/book.xlsx", "nodes[0].config.path: a URL is not a path under the data roots"),
        ("write_parquet", "s3://lake/out/*.parquet", "nodes[1].config.path: 's3://lake/out/*.parquet' must name one"),
        ("read_csv", "data/orders.csv", "nodes[0].config.credentials: only an s3:// path takes credentials"),
    ],
)
def test_bad_paths_name_their_field(node: str, path: str, expect: str, store: S3) -> None:
    config: dict[str, Any] = {"path": path}
    if path == "data/orders.csv":
        config["credentials"] = {"secret": "lake-keys"}
    nodes = [{"name": "n", "type": node, "config": config}]
    if node.startswith("write"):
        nodes.insert(0, {"name": "src", "type": "read_parquet", "config": {"path": "s3://lake/in/orders.parquet"}})
    wires = [{"from": "src", "to": "n"}][: len(nodes) - 1]
    document = json.dumps({"name": "bad", "nodes": nodes, "connections": wires})
    message = str(check(document))
    assert message.startswith(expect) or expect in message, message
    assert "topsecret" not in message and "\n" not in message


def test_credentials_are_only_a_secret_reference(store: S3) -> None:
    node = {"name": "n", "type": "read_csv", "config": {"path": "s3://lake/in/regions.csv", "credentials": "AKIA:x"}}
    err = check(json.dumps({"name": "bad", "nodes": [node]}))
    assert err.path.startswith("nodes[0].config.credentials") and "AKIA:x" not in str(err)
    for value in ("not json", json.dumps({"aws_access_key_id": "a"}), json.dumps({"aws_endpoint_url": "http://x"})):
        with pytest.raises(ValueError, match=r"^credentials: the secret must be a JSON object") as bad:
            read("read_csv", "s3://lake/in/regions.csv", secret=value)
        assert "http://x" not in str(bad.value)


def test_unreachable_endpoint_is_one_line_and_writes_nothing(store: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WEFLOW_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    expect = f"the connection to the object store at http://127.0.0.1:{port} failed (Connection refused (os error 111))"
    with pytest.raises(OutboundError) as err:
        read("read_parquet", "s3://lake/in/orders.parquet")
    assert str(err.value) == f"s3://lake/in/orders.parquet: {expect}"
    with pytest.raises(OutboundError, match=r"^s3://lake/out/u\.parquet: the connection to the object store at"):
        write("write_parquet", "s3://lake/out/u.parquet", ORDERS)
    assert "out/u.parquet" not in store.keys()


def test_bad_credentials_are_one_line_without_the_key_and_write_nothing(
    store: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "Wr0ngSecretValue")
    refused = "the object store refused the credentials (SignatureDoesNotMatch)"
    for attempt, expect in (
        (lambda: read("read_csv", "s3://lake/in/regions.csv"), "access denied (403 Forbidden: bad credentials or "),
        (lambda: read("read_parquet", "s3://lake/in/orders.parquet"), refused),
        (lambda: write("write_csv", "s3://lake/out/b.csv", ORDERS), refused),
    ):
        with pytest.raises(OutboundError) as err:
            attempt()
        assert expect in str(err.value)
        assert "Wr0ng" not in str(err.value) and store.key_id not in str(err.value)
    wrong = json.dumps({"aws_access_key_id": "AKIANOSUCHKEY", "aws_secret_access_key": "Wr0ngSecretValue"})
    with pytest.raises(OutboundError, match=r"refused the credentials \(InvalidAccessKeyId\)$") as err:
        write("write_parquet", "s3://lake/out/b.parquet", ORDERS, secret=wrong)
    assert "Wr0ng" not in str(err.value) and "AKIANOSUCHKEY" not in str(err.value)
    assert not [k for k in store.keys() if k.startswith("out/b.")]


def test_missing_objects_and_buckets(store: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutboundError, match=r"^s3://lake/in/nope\.parquet: no such object$"):
        read("read_parquet", "s3://lake/in/nope.parquet")
    with pytest.raises(OutboundError, match=r"^s3://lake/in/nope\.csv: no such object$"):
        read("read_csv", "s3://lake/in/nope.csv")
    with pytest.raises(OutboundError, match=r"^s3://lake/none/\*\.csv: "):
        read("read_csv", "s3://lake/none/*.csv")
    monkeypatch.setenv("WEFLOW_S3_BUCKETS", "lake,gone")
    with pytest.raises(OutboundError, match=r"^s3://gone/a\.parquet: no such bucket$"):
        read("read_parquet", "s3://gone/a.parquet")


def test_a_sink_that_fails_leaves_the_previous_object_and_writes_no_new_one(store: S3) -> None:
    store.put("keep/orders.parquet", parquet(ORDERS))
    before = store.get("keep/orders.parquet")
    broken = pl.LazyFrame({"id": ["1", "2", "x"]}).select(pl.col("id").cast(pl.Int64))  # fails as it is collected
    for path in ("s3://lake/keep/orders.parquet", "s3://lake/keep/new.parquet"):
        with pytest.raises(pl.exceptions.InvalidOperationError):
            write("write_parquet", path, broken)
    stopped = Stop()
    stopped.stop(TimeoutError("node timeout"))
    with pytest.raises(TimeoutError):
        write("write_parquet", "s3://lake/keep/orders.parquet", ORDERS.lazy(), stop=stopped)
    assert store.get("keep/orders.parquet") == before
    assert store.keys() == sorted({*store.keys()} - {"keep/new.parquet"})


class CuttingProxy:
    """A loopback TCP proxy to moto that passes every request through but cuts each PUT halfway through its body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.cut = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the listening socket closed: the proxy's end
            while True:
                client, _ = self.server.accept()
                threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as upstream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += client.recv(65536)
            head = data.split(b"\r\n\r\n", 1)[0]
            if head.startswith(b"PUT "):
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                while len(data) < len(head) + 4 + length // 2:
                    data += client.recv(65536)
                upstream.sendall(data[: len(head) + 4 + length // 2])  # half the object, then both ends drop
                self.cut += 1
                return
            upstream.sendall(data)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(5)

    def close(self) -> None:
        self.server.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def test_an_upload_cut_halfway_leaves_the_previous_object(store: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("cut/orders.parquet", parquet(ORDERS))
    before = store.get("cut/orders.parquet")
    bigger = pl.DataFrame({"id": range(20_000), "note": [f"row {i}" for i in range(20_000)]})
    proxy = CuttingProxy(store.endpoint)
    monkeypatch.setenv("WEFLOW_S3_ENDPOINT", proxy.endpoint)
    try:
        assert_frame_equal(read("read_parquet", "s3://lake/cut/orders.parquet"), ORDERS)  # reads pass through
        for path in ("s3://lake/cut/orders.parquet", "s3://lake/cut/new.parquet"):
            with pytest.raises(OutboundError, match=rf"^{re.escape(path)}: ") as err:
                write("write_parquet", path, bigger)
            assert str(err.value).endswith("failed (connection closed before message completed)")
    finally:
        proxy.close()
    assert proxy.cut >= 2  # a retry (the client's own) is cut too
    assert store.get("cut/orders.parquet") == before
    assert "cut/new.parquet" not in store.keys()


def test_an_unforeseen_store_error_is_one_line_without_a_key() -> None:
    store = objectstore.Store.from_env({"WEFLOW_S3_ENDPOINT": "http://user:pw@minio.internal:9000/x"})
    options = objectstore.storage_options(json.dumps({"access_key_id": "AKIAX", "secret_access_key": "s3cr3t"}), store)
    with pytest.raises(OutboundError) as err, objectstore.explained("s3://lake/a.csv", store, options):
        raise OSError("object-store error: Generic S3 error: signing with s3cr3t for AKIAX failed - <?xml ...>\nmore")
    assert str(err.value) == "s3://lake/a.csv: OSError: Generic S3 error: signing with *** for *** failed"
    assert store.shown_endpoint == "http://minio.internal:9000"
    with pytest.raises(OutboundError, match=r"^WEFLOW_S3_MAX_RETRIES='many': must be a whole number$"):
        objectstore.Store.from_env({"WEFLOW_S3_MAX_RETRIES": "many"})


def test_each_organization_of_a_shared_catalog_is_checked_and_runs_in_its_own_prefix(
    store: S3, scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One catalog, two organizations: beta's run reads and writes under beta's prefix, not the process's."""
    monkeypatch.setenv("WEFLOW_S3_BUCKETS", "lake/{organization}")
    store.put("beta/in/orders.parquet", parquet(ORDERS))
    beta = Scope(scope.catalog, accounts.add_user(scope.catalog.path, "beta", "bo"))
    copy = """
name: copy
nodes:
  - {name: src, type: read_parquet, config: {path: "s3://lake/PREFIX/in/orders.parquet"}}
  - {name: out, type: write_parquet, config: {path: "s3://lake/PREFIX/out/orders.parquet"}}
connections: [{from: src, to: out}]
"""
    with pytest.raises(DefinitionError, match=r"^nodes\[0\]\.config\.path: .*outside the key prefixes .*'beta/'"):
        workflows.apply(parse(copy.replace("PREFIX", "acme")), beta)  # the process's organization's prefix
    assert workflows.list_workflows(beta) == []
    workflows.apply(parse(copy.replace("PREFIX", "beta")), beta)
    result = run("copy", beta)
    assert result.ok, result.execution.error_message
    assert_frame_equal(pl.read_parquet(store.get("beta/out/orders.parquet")), ORDERS)
    assert "acme/out/orders.parquet" not in store.keys()
