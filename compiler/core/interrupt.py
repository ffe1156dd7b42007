"""SIGTERM unwinds like Ctrl-C: `timeout`, CI cancellation and `docker stop` send it, and by
default it kills the process where it stands, leaving staging and temp folders behind. Raised as
an exception instead, every `finally` runs: temp folders go, a save in progress is rolled back."""
from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (or SIGHUP); handled wherever Ctrl-C is."""


def _raise(signum, frame):
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_unwind():
    """Within the block, SIGTERM and SIGHUP raise Terminated. Only from the main thread, and only
    for signals still at their default action (a handler the caller installed is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            installed[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)
