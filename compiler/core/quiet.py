"""Other libraries do not talk on the user's terminal during a compile: their warnings (torch's
exporter, transformers' deprecation notices, matplotlib) and transformers' log lines are kept in a
list that goes into the report's "log"; hewn's own HewnWarning passes through as it was raised."""
from __future__ import annotations

import contextlib
import logging
import warnings

MAX_LOG = 200   # a chatty library cannot grow the report without bound


class _Collect(logging.Handler):
    def __init__(self, log: list):
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        _add(self.log, {"from": record.name, "kind": record.levelname.lower(), "text": record.getMessage()[:500]})


def _add(log: list, entry: dict) -> None:
    """One entry per distinct line, with how many times it came (a forward runs several times)."""
    for seen in log:
        if seen["from"] == entry["from"] and seen["text"] == entry["text"]:
            seen["times"] = seen.get("times", 1) + 1
            return
    if len(log) < MAX_LOG:
        log.append(entry)


@contextlib.contextmanager
def third_party_quiet(log: list):
    """Collect warnings (all but HewnWarning) and transformers' / torch's logger output into `log`."""
    from hewn.core.errors import HewnWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HewnWarning):
            original(message, category, filename, lineno, file, line)
        else:
            _add(log, {"from": f"{filename}:{lineno}", "kind": category.__name__, "text": str(message)[:500]})

    loggers = [logging.getLogger(name) for name in ("transformers", "torch", "torch.onnx", "onnxscript")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    collect = _Collect(log)
    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.showwarning = show
        for lg in loggers:
            lg.handlers, lg.propagate = [collect], False
        try:
            yield log
        finally:
            for lg, handlers, propagate in saved:
                lg.handlers, lg.propagate = handlers, propagate


__all__ = ["third_party_quiet"]
