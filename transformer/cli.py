"""What every script shares: logging to stderr, and user mistakes as one line with exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from transformer.errors import ToolkitError


def run(main: Callable[[], int | None]) -> None:
    """Call a script's `main`; a ToolkitError prints `error: ...` and exits 2, without a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        code = main()
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the file system refused (disk full, no permission): not a bug of ours
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
