"""Reading text as users give it: files (gzipped or not) or streams, with stray bytes and characters made harmless.

Training and translation read text through the same two functions, so a sentence is cleaned the same way in both.
"""

from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path
from typing import BinaryIO

from transformer.errors import DataError


def read_lines(source: Path | BinaryIO) -> list[str]:
    """Lines of UTF-8 text from a file (gzipped when it ends in .gz) or a binary stream such as stdin.

    Tolerant of a BOM, CRLF or CR endings and invalid bytes (replaced), and splits on newlines only: str.splitlines
    would also split on \\x1c, \\u2028 ... and misalign the lines of a parallel corpus.
    """
    try:
        if isinstance(source, Path):
            raw = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
        else:
            raw = source.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{source}: cannot be read: {e}") from None
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def clean_text(text: str | None) -> str:
    """Control characters become spaces; runs of whitespace collapse; the ends are stripped."""
    if text is None:
        return ""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(text))
    return " ".join(text.split())
