"""Secrets as Prefect Secret blocks (``prefect.blocks.system.Secret``), one block per organization and name.

A block is named ``weflow-<16 hex of sha256(organization)>-<name>``: the fixed-length prefix keeps one
organization's names apart from another's whatever the organization is called (a name cannot reach
into another prefix), and every name is a valid Prefect block name. Values go to and come from
Prefect only here; nothing here logs or returns a value except ``values`` to the run engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from prefect.blocks.system import Secret
from prefect.exceptions import ObjectNotFound

from weflow.errors import SecretMissing
from weflow.prefect_gateway.client import client, on_server

SLUG = "secret"  # Prefect's block type of Secret
PAGE = 200


def prefix(organization: str) -> str:
    return f"weflow-{hashlib.sha256(organization.encode()).hexdigest()[:16]}-"


def block_name(organization: str, name: str) -> str:
    return prefix(organization) + name


async def values(organization: str, names: Iterable[str]) -> dict[str, str]:
    """The values of the organization's secrets ``names`` (in a run: Prefect's client of the run); SecretMissing."""
    found: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            block: Secret[Any] = await Secret.aload(block_name(organization, name))
        except ValueError as exc:
            if isinstance(exc.__cause__, ObjectNotFound):
                raise SecretMissing(name, organization) from None
            raise
        value = block.value.get_secret_value()
        found[name] = value if isinstance(value, str) else json.dumps(value)  # a JSON value set in Prefect's UI
    return found


def reveal(organization: str, names: Iterable[str]) -> dict[str, str]:
    """``values`` from sync code (alerts), on this home's server."""
    wanted = list(names)
    return on_server(lambda: values(organization, wanted))


def save(organization: str, name: str, value: str) -> None:
    """Set (or replace) the organization's secret ``name``."""

    async def call() -> None:
        async with client() as prefect:
            await Secret(value=value).asave(block_name(organization, name), overwrite=True, client=prefect)

    on_server(call)


def names(organization: str) -> list[str]:
    """The organization's secret names, sorted; never a value."""

    async def call() -> list[str]:
        mine = prefix(organization)
        found: list[str] = []
        async with client() as prefect:
            offset = 0
            while True:
                try:
                    page = await prefect.read_block_documents_by_type(
                        SLUG, offset=offset, limit=PAGE, include_secrets=False
                    )
                except ObjectNotFound:
                    return []  # no Secret block was ever saved on this server
                found += [d.name for d in page if d.name and d.name.startswith(mine)]
                if len(page) < PAGE:
                    break
                offset += PAGE
        return sorted(n.removeprefix(mine) for n in found)

    return on_server(call)


def remove(organization: str, name: str) -> bool:
    """Delete the organization's secret ``name``; False if it was not set."""

    async def call() -> bool:
        async with client() as prefect:
            try:
                doc = await prefect.read_block_document_by_name(
                    block_name(organization, name), SLUG, include_secrets=False
                )
            except ObjectNotFound:
                return False
            await prefect.delete_block_document(doc.id)
            return True

    return on_server(call)
