"""Files written whole or not at all: sinks, persisted node outputs and spilled frames all go through here.

A file is written to a temporary name beside its target, then renamed over it, so a reader sees
the old file or the new one, never half of one; a failed write leaves no temporary file behind.
The temporary file is created with mode 0666 so that the umask decides the output's mode
(``mkstemp``'s 0600 made outputs unreadable by the other users of a shared machine).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomic(target: Path, write: Callable[[Path], None]) -> Path:
    """Write ``target`` with ``write(temporary path)``, then rename: readers see old or new."""
    return _write_then_rename(target.parent, target.name, write, lambda _: target)


def write_addressed(directory: Path, suffix: str, write: Callable[[Path], None], label: str = "file") -> Path:
    """Write a file into ``directory`` named by the SHA-256 of its bytes (``<digest><suffix>``)."""

    def named(tmp: Path) -> Path:
        return directory / f"{hashlib.sha256(tmp.read_bytes()).hexdigest()}{suffix}"

    return _write_then_rename(directory, label, write, named)


def _write_then_rename(
    directory: Path, label: str, write: Callable[[Path], None], target: Callable[[Path], Path]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{label}.{secrets.token_hex(8)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        final = target(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
