"""Reading text as users give it: files (gzipped or not) or streams, with stray bytes and characters made harmless.
Training and translation read and clean text through the same functions, so a sentence is cleaned the same way in both.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
import select
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from transformer.errors import DataError


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file (gzipped when it ends in .gz), one at a time: a corpus is never held whole.

    Tolerant of a BOM (utf-8-sig drops it), CRLF or CR endings and invalid bytes (replaced). Universal newlines split
    on LF, CRLF and CR only: str.splitlines would also split on \\x1c, \\u2028 ... and misalign a parallel corpus.
    A broken gzip file is a DataError that names it and says what is wrong (`gzip_problem`).
    """
    try:
        raw = gzip.open(path) if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115 (closed below)
        with io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=None) as text:
            for line in text:
                yield line.removesuffix("\n")
    except GZIP_ERRORS as e:
        with open(path, "rb") as file:  # its first bytes tell a file cut short from one that is not gzip at all
            raise DataError(f"{path}: {gzip_problem(e, file.read(len(GZIP_MAGIC)))}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read: {e}") from None


# What reading a broken gzip file raises: EOFError when it ends early, zlib.error for bad compressed data (neither is
# an OSError), BadGzipFile for a wrong header, checksum or length.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
GZIP_MAGIC = b"\x1f\x8b"


def gzip_problem(error: Exception, head: bytes) -> str:
    """One of GZIP_ERRORS in a user's words, given the file's first bytes: a file cut short (most often an
    interrupted download), not gzip at all, or damaged inside."""
    if isinstance(error, EOFError):
        return f"truncated gzip file ({error})"
    if not head.startswith(GZIP_MAGIC):
        return "not a gzip file"
    return f"corrupt gzip file ({error})"


def check_gzip(path: Path) -> None:
    """Read a gzip file to its end, keeping nothing: a broken file fails here, before anything is written from it
    (translation streams its output, so a failure halfway would leave half a file). Read by `iter_lines`, so that it
    fails with the same words."""
    for _ in iter_lines(path):
        pass


def read_chunks(stream: BinaryIO, max_lines: int) -> Iterator[list[str]]:
    """The lines of a binary stream as they arrive, the same lines `iter_lines` gives for a file, in chunks of at most
    `max_lines`: a chunk ends early when no more input is waiting, so a line typed at a terminal (or written by a
    slow producer) is answered at once, while a file is read in full chunks and never held whole."""
    read = getattr(stream, "read1", stream.read)
    try:
        fd = stream.fileno()
        waits = not stat.S_ISREG(os.fstat(fd).st_mode)  # a pipe or a terminal can be waiting; a file never
    except (OSError, AttributeError, ValueError):
        fd, waits = -1, False
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")  # as `iter_lines` decodes
    pending, lines = "", []
    while True:
        data = read(1 << 16)
        text = (pending + decoder.decode(data, final=not data)).replace("\r\n", "\n")
        # A CR at the end may be the first half of a CRLF: it waits for the next read, unless the input ended.
        cut = len(text) - 1 if data and text.endswith("\r") else len(text)
        *complete, pending = text[:cut].replace("\r", "\n").split("\n")
        lines += complete
        pending += text[cut:]
        if not data and pending:  # the last line had no newline
            lines.append(pending)
        while len(lines) >= max_lines or (lines and not data):
            yield lines[:max_lines]
            lines = lines[max_lines:]
        if not data:
            return
        if lines and waits and not select.select([fd], [], [], 0)[0]:
            yield lines
            lines = []


# Unicode categories Cc (C0, DEL, C1), Zl and Zp: characters that would break a line or a terminal.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_text(text: str | None) -> str:
    """Control characters become spaces; runs of whitespace collapse; the ends are stripped."""
    if text is None:
        return ""
    return " ".join(CONTROL.sub(" ", str(text)).split())
