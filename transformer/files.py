"""The one way the toolkit writes a file: whole or not at all, whenever the process dies or the disk fills."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file that becomes `path` only once written whole: it is written under a hidden name beside
    `path` (.NAME.RANDOM.tmp), flushed to disk, renamed over `path`, and the rename flushed too. A crash at any
    instant leaves the old file or the new one, never a torn one; on any failure the temporary file is removed."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        with open(partial, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
