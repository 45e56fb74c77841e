"""Files shipped with the edge package, and the one way the runtime replaces a file. Standard library only:
the CLI reads these before it knows whether the command needs numpy (`har-edge --help` must not load it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = PACKAGE / "models" / "default"
# The shipped example (scripts/make_example.py): the demo streams it, bench replays it by default.
EXAMPLE_RECORDING = PACKAGE / "examples" / "user01_exp01.csv"


def write_text_atomically(path: str | Path, text: str) -> None:
    """Replace `path` by `text`: a temporary file in the same folder, fsync, rename, so that a crash leaves the
    old file or the new one, never half of one. Raises OSError (the temporary file removed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
