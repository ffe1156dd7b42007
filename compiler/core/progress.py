"""Progress on stderr for the steps that can take a while (tqdm, a dependency).

On by default only where stderr is a terminal; `configure(False)` (the CLI under --json) or
HEWN_PROGRESS=0 turns it off, HEWN_PROGRESS=1 on. Loops get a bar (`bar`); single steps
(`step`) print a line only once they have run for SHOW_AFTER_S, so quick compiles stay quiet,
and a closing line with their time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

SHOW_AFTER_S = 2.0
_forced: list = [None]   # configure(): None = decide by the terminal


def configure(enabled: bool | None) -> None:
    _forced[0] = enabled


def enabled() -> bool:
    env = os.environ.get("HEWN_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    if _forced[0] is not None:
        return _forced[0]
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, desc: str, total=None, unit: str = "it"):
    """A tqdm bar over `iterable` (or a manual one with total=), silent when progress is off."""
    from tqdm import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return tqdm(iterable, total=total, desc=f"hewn {desc}", unit=unit, leave=False, file=sys.stderr,
                disable=not enabled())


@contextlib.contextmanager
def step(desc: str, after: float | None = None):
    """'hewn: <desc> ...' once the step has run `after` seconds (SHOW_AFTER_S; HEWN_PROGRESS_AFTER
    overrides), then 'hewn: <desc> done in 12.3 s' when it ends."""
    if not enabled():
        yield
        return
    delay = float(os.environ.get("HEWN_PROGRESS_AFTER", SHOW_AFTER_S)) if after is None else after
    finished, shown = threading.Event(), threading.Event()
    started = time.perf_counter()

    def announce():
        if not finished.wait(delay):
            shown.set()
            _write(f"hewn: {desc} ...")
    thread = threading.Thread(target=announce, daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join()
        if shown.is_set():
            _write(f"hewn: {desc} done in {time.perf_counter() - started:.1f} s")


def say(message: str) -> None:
    """'hewn: <message>' now, when progress is on: the steps of a long search (weight-only bits)."""
    if enabled():
        _write(f"hewn: {message}")


def _write(line: str) -> None:
    try:
        from hewn.core.errors import printable

        sys.stderr.write(printable(line) + "\n")   # names in a message stay one line, no ESC sequences
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed stderr must not fail the compile
        pass
