"""How a command stops: the first SIGTERM / SIGINT interrupts it, a later one waits for the shutdown.

Standard library only, so both command lines share it: `har-bridge simulate` (which must remove its link
however often it is told to stop) and every `har-edge` command, the monitor and the enrolment included.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any


class StopSignals:
    """SIGTERM (systemd's stop) and SIGINT (Ctrl-C) stop a command once; then it shuts down in peace.

    The first signal raises KeyboardInterrupt where the main thread is (the loop catches it: flush,
    counters, exit 0). From then on, and from the moment shutdown begins however the loop ended, a
    further signal is only acknowledged: a second Ctrl-C or a `systemctl stop` repeated while the web
    server or the MQTT client closes (up to a few seconds) used to escape the loop's `finally`, and the
    mount calibration, the final counters and the monitor's stats went unwritten.

    SIGINT gets a handler explicitly: a process started in the background by a non-interactive shell
    (`cmd &` in a script, some CI runners) inherits SIGINT *ignored*, and Python then installs no
    KeyboardInterrupt handler, so Ctrl-C / `kill -INT` would be silently dropped."""

    stopping = False
    _say: Callable[[str], None] = print
    _previous: dict[int, Any] = {}

    @classmethod
    def install(cls, say: Callable[[str], None]) -> None:
        cls.stopping, cls._say = False, say
        for signum in (signal.SIGTERM, signal.SIGINT):
            cls._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, cls._handle)

    @classmethod
    def restore(cls) -> None:
        """The handlers from before `install` (har-edge's main called in-process, by tests)."""
        for signum, handler in cls._previous.items():
            signal.signal(signum, handler)
        cls._previous = {}

    @classmethod
    def block_until_exit(cls) -> None:
        """The command is done: a stop signal from here on is ignored. SIG_IGN, not a mask: a mask holds for
        the calling thread only (the kernel hands the signal to another), and finalization resets Python
        handlers to the default but leaves SIG_IGN as it is."""
        if cls._previous:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)

    @classmethod
    def shutdown_begins(cls) -> None:
        cls.stopping = True

    @classmethod
    def _handle(cls, signum: int, frame: FrameType | None) -> None:
        if not cls.stopping:
            cls.stopping = True
            raise KeyboardInterrupt
        cls._say(f"{signal.Signals(signum).name} again: already stopping; saving the state and closing the outputs "
                 "first (a few seconds at most)")
