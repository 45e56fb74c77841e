"""har-edge's messages on stderr: one line each, written whole.

Standard library only. Messages come from the main thread and from others (paho-mqtt's network
thread, the web server's): `print(message, file=sys.stderr)` writes the text and the newline as two
writes, and two threads' lines then ran together on one line ("reading /dev/x" + "har-edge: warning: ...").
One `write` of the whole line under a lock cannot interleave.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def say(message: str, prefix: str = "har-edge: ") -> None:
    """`prefix + message` and a newline to stderr in one write, flushed."""
    with _lock:
        try:
            sys.stderr.write(f"{prefix}{message}\n")
            sys.stderr.flush()
        except ValueError:  # stderr closed (`har-edge ... | head` after a broken pipe): nothing to tell
            pass
