"""The one way the toolkit writes a file: whole or not at all, whenever the process dies or the disk fills."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from transformer.errors import ToolkitError


def check_output_path(path: str | os.PathLike, option: str) -> None:
    """Fail before the work, in one line, where writing `path` could only fail at its end."""
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"{option} {path}: a folder, not a file")
    if not path.parent.is_dir():
        raise ToolkitError(f"{option} {path}: folder not found: {path.parent}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file, written beside `path` as .NAME.RANDOM.tmp, flushed, renamed over `path`, and the rename
    flushed: a crash leaves the old file or the new one, never a torn one; a failure removes the temporary file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        file = open(partial, "xb")  # noqa: SIM115 (the with below closes it)
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        try:
            os.replace(partial, path)
        except OSError as e:  # e.g. `path` is a folder: name it, not our temporary file
            raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        partial.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
