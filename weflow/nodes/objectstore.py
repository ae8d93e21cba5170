"""Object storage for the file sources and sinks: ``s3://bucket/key`` through Polars' own cloud I/O.

The operator opens buckets the way data roots open folders: ``WEFLOW_S3_BUCKETS="lake,exports/{organization}"``
lists buckets, or a bucket and a key prefix (``{organization}`` becomes ``RunContext.organization``, else the
settings' organization); a URL elsewhere is refused at apply and again when the node runs. The endpoint,
region and retries come from the operator (``WEFLOW_S3_ENDPOINT``, ``WEFLOW_S3_REGION``,
``WEFLOW_S3_MAX_RETRIES``), the credentials from a node's ``credentials: {secret: NAME}`` (a JSON object of
AWS keys) or else from the operator's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (never both mixed,
never from a definition in clear). Messages name the URL, never a key.

A sink collects its frame first, then Polars uploads it in one PUT (or one multipart upload, which S3
shows only once completed): a reader sees the old object or the new one; a failed write leaves the old.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import polars as pl

from weflow.config import ORGANIZATION, settings
from weflow.errors import OutboundError

Format = Literal["parquet", "csv", "ndjson"]
WriteFormat = Literal["parquet", "csv"]
Form = Literal["glob", "one", "literal"]
GLOB = "*?["
SEE = "see WEFLOW_S3_BUCKETS"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rule
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
MAX_KEY_BYTES = 1024
REFUSED_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def is_url(path: object) -> bool:
    """Whether a config path is a URL (``scheme://``) rather than a path under the data roots."""
    return isinstance(path, str) and bool(_URL.match(path))


@dataclass(frozen=True)
class ObjectURL:
    """A checked ``s3://bucket/key`` (the key may be a glob for a source)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Store:
    """The operator's object storage settings, read from the environment when asked for."""

    buckets: tuple[str, ...]  # "bucket" or "bucket/prefix", as configured (may hold {organization})
    endpoint: str | None
    region: str
    max_retries: int | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Store:
        env = os.environ if env is None else env
        retries = env.get("WEFLOW_S3_MAX_RETRIES", "").strip()
        if retries and not retries.isdigit():
            raise OutboundError(f"WEFLOW_S3_MAX_RETRIES={retries!r}: must be a whole number")
        region = env.get("WEFLOW_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return cls(
            buckets=tuple(b.strip().strip("/") for b in env.get("WEFLOW_S3_BUCKETS", "").split(",") if b.strip()),
            endpoint=env.get("WEFLOW_S3_ENDPOINT", "").strip() or None,
            region=region or "us-east-1",
            max_retries=int(retries) if retries else None,
        )

    def allowed(self, organization: str) -> list[tuple[str, str]]:
        """The (bucket, key prefix) pairs open to ``organization``; a template with a bad name opens nothing."""
        usable = organization not in {"", ".", ".."} and "/" not in organization
        found = []
        for entry in self.buckets:
            if ORGANIZATION in entry and not usable:
                continue
            bucket, _, prefix = entry.replace(ORGANIZATION, organization).partition("/")
            found.append((bucket, prefix.strip("/")))
        return found

    @property
    def shown_endpoint(self) -> str:
        """The endpoint for a message: scheme, host and port only."""
        if self.endpoint is None:
            return "AWS S3"
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def locate(path: str, field: str = "path", form: Form = "glob", organization: str | None = None) -> ObjectURL:
    """Check an ``s3://`` URL (ValueError ``field: ...`` otherwise) and that the operator opened its bucket
    to ``organization`` (default: the settings')."""
    url = parse(path, field, form)
    fixed = re.split(r"[*?\[]", url.key, maxsplit=1)[0]
    allowed = Store.from_env().allowed(settings().organization if organization is None else organization)
    prefixes = [prefix for bucket, prefix in allowed if bucket == url.bucket]
    if not prefixes:
        raise ValueError(f"{field}: bucket {url.bucket!r} is not allowed ({SEE})")
    if not any(not p or fixed.startswith(f"{p}/") for p in prefixes):
        shown = ", ".join(repr(f"{p}/") for p in prefixes)
        raise ValueError(f"{field}: {str(url)!r} is outside the key prefixes open in bucket {url.bucket!r} ({shown})")
    return url


def parse(path: str, field: str = "path", form: Form = "glob") -> ObjectURL:
    """``s3://bucket/key`` read and checked on its own: scheme, bucket name, key segments, glob."""
    scheme, _, rest = path.partition("://")
    if scheme != "s3":
        raise ValueError(f"{field}: {scheme}:// URLs are not supported (an s3:// URL or a path under the data roots)")
    bucket, _, key = rest.partition("/")
    if "@" in bucket or ":" in bucket:  # never quoted: it may hold a key
        raise ValueError(f"{field}: an s3:// URL must not carry credentials or a port (credentials: {{secret: NAME}})")
    if not bucket:
        raise ValueError(f"{field}: {path!r} names no bucket")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{field}: bucket {bucket!r} is not a valid bucket name")
    if not key:
        raise ValueError(f"{field}: {path!r} names no object key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"{field}: the object key is over {MAX_KEY_BYTES} bytes (S3's limit)")
    segments = key.split("/")
    if ".." in segments:
        raise ValueError(f"{field}: {path!r} must not contain '..'")
    if "\0" in key or any(s in {"", "."} for s in segments):
        raise ValueError(f"{field}: {path!r}: a key segment is empty, '.' or holds a NUL character")
    if form != "glob" and any(ch in key for ch in GLOB):
        raise ValueError(f"{field}: {path!r} must name one object (no '*', '?' or '[')")
    return ObjectURL(bucket, key)


def credentials(value: str) -> dict[str, str]:
    """The AWS keys in a credentials secret's value (a JSON object); the message never quotes it."""
    want = "credentials: the secret must be a JSON object with aws_access_key_id and aws_secret_access_key"
    try:
        found = json.loads(value)
    except ValueError:
        raise ValueError(f"{want} (it is not JSON)") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) and v for v in found.values()):
        raise ValueError(f"{want} of non-empty strings")
    keys = {k if k.startswith("aws_") else f"aws_{k}": v for k, v in found.items()}
    extra = sorted(set(keys) - set(CREDENTIAL_KEYS))
    if extra:
        raise ValueError(f"{want} (and optionally aws_session_token); {extra[0]!r} is not taken")
    if not {"aws_access_key_id", "aws_secret_access_key"} <= set(keys):
        raise ValueError(want)
    return keys


def storage_options(secret: str | None, store: Store | None = None) -> dict[str, Any]:
    """Polars' ``storage_options``: the operator's endpoint, region, retries; the secret's keys, else the operator's."""
    store = store or Store.from_env()
    options: dict[str, Any] = {"aws_region": store.region}
    if store.endpoint:
        options["aws_endpoint_url"] = store.endpoint
        if store.endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"
    if store.max_retries is not None:
        options["max_retries"] = store.max_retries
    if secret is not None:
        options.update(credentials(secret))
    else:
        options.update({k: os.environ[k.upper()] for k in CREDENTIAL_KEYS if os.environ.get(k.upper())})
    return options


@contextmanager
def explained(url: ObjectURL | str, store: Store, options: Mapping[str, Any]) -> Iterator[None]:
    """Turn Polars' object-store errors (long, with the server's XML) into one OutboundError line naming ``url``;
    no key of ``options`` shows in it."""
    try:
        yield
    except (OSError, pl.exceptions.PolarsError) as exc:
        text = f"{url}: {_problem(exc, store)}"
        for name in CREDENTIAL_KEYS:
            if options.get(name):
                text = text.replace(str(options[name]), "***")
        raise OutboundError(text) from None


def _problem(exc: BaseException, store: Store) -> str:
    text = str(exc)
    code = next(iter(_CODE.findall(text)), "")
    if code in REFUSED_CREDENTIALS:
        return f"the object store refused the credentials ({code})"
    if code == "AccessDenied":
        return "access denied (AccessDenied)"
    if isinstance(exc, PermissionError):  # a HEAD's answer has no body to tell which
        return "access denied (403 Forbidden: bad credentials or no permission)"
    if code == "NoSuchBucket":
        return "no such bucket"
    if code == "NoSuchKey" or isinstance(exc, FileNotFoundError):
        return "no such object"
    if isinstance(exc, ConnectionError | TimeoutError) or "error sending request" in text:
        cause = text.strip().splitlines()[-1].split(":", 1)[-1].strip()
        return f"the connection to the object store at {store.shown_endpoint} failed ({cause})"
    first = re.split(r" - |<\?xml|\(path: ", text.strip().splitlines()[0] if text.strip() else "", maxsplit=1)[0]
    return f"{type(exc).__name__}: {first.removeprefix('object-store error: ').strip()}"


def scan(path: str, fmt: Format, secret: str | None, organization: str | None, **options: Any) -> pl.LazyFrame:
    """A lazy scan of the objects ``path`` names; their schema is read now, so a bad URL fails at this node."""
    url = locate(path, organization=organization)
    store = Store.from_env()
    opts = storage_options(secret, store)
    with explained(url, store, opts):
        if fmt == "parquet":
            frame = pl.scan_parquet(str(url), storage_options=opts, **options)
        elif fmt == "csv":
            frame = pl.scan_csv(str(url), storage_options=opts, **options)
        else:
            frame = pl.scan_ndjson(str(url), storage_options=opts, **options)
        frame.collect_schema()
    return frame


def write(frame: pl.DataFrame, path: str, fmt: WriteFormat, secret: str | None, organization: str | None) -> None:
    """Upload a collected frame to ``path`` in one PUT or one multipart upload: the old object or the new one."""
    url = locate(path, form="literal", organization=organization)
    store = Store.from_env()
    opts = storage_options(secret, store)
    with explained(url, store, opts):
        if fmt == "parquet":
            frame.write_parquet(str(url), storage_options=opts, compression="zstd")
        else:
            frame.write_csv(str(url), storage_options=opts)
