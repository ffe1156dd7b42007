"""One exception family. Every message says what went wrong, where, and what to do."""
from __future__ import annotations


class HewnError(Exception):
    """Base of every error hewn raises on purpose."""


class InvalidModelError(HewnError):
    """The input is not a readable, valid ONNX model."""


class UnsupportedModelError(HewnError):
    """A valid model that hewn cannot process (unknown op domain, opset out of range, ...)."""


class TraceError(HewnError):
    """A torch.nn.Module could not be captured as a graph."""


class InputMismatchError(HewnError):
    """example_inputs / calib_data do not fit the model."""


class ConfigError(HewnError):
    """A compile() argument, pass name or pass config is wrong."""


class NotAvailableError(HewnError):
    """A feature that a later hewn release provides."""


class RunTimeoutError(HewnError):
    """Running the model in ONNX Runtime took longer than the limit (HEWN_RUN_TIMEOUT_S)."""


class VerificationError(HewnError):
    """The compiled model does not reproduce the reference outputs."""


class StageError(HewnError):
    """A stage of compile() outside the passes failed unexpectedly (a bug): names the stage."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage, self.cause = stage, cause
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        super().__init__(f"compile stage '{stage}' failed: {type(cause).__name__}: {first}. This is a bug in hewn; "
                         f"please report it with the model")


class PassError(HewnError):
    """A pass failed; names the pass and the passes that ran before it."""

    def __init__(self, pass_name: str, passes_before: list[str], cause: BaseException):
        self.pass_name = pass_name
        self.passes_before = list(passes_before)
        self.cause = cause
        before = ", ".join(self.passes_before) if self.passes_before else "nothing"
        super().__init__(
            f"pass '{pass_name}' failed (after [{before}]): {type(cause).__name__}: {cause}. "
            f"Run without it with passes=[...] or report the model that triggers it."
        )


_ANSI = None


def plain(text: str) -> str:
    """Third-party text (an exporter's message) without its terminal colour codes."""
    global _ANSI
    import re

    _ANSI = _ANSI or re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
    return _ANSI.sub("", str(text))


_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` safe for a terminal: control characters (ESC sequences, carriage returns, newlines
    that would break a one-line message or forge a `hewn:` line), C1 controls and bidi overrides,
    as found in crafted node and tensor names, are shown escaped (`\\x1b`) instead of sent."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


class HewnWarning(UserWarning):
    """What hewn itself warns about (a missed budget, a large loss): the only warnings a compile lets
    reach the terminal; other libraries' go to the report's log (hewn.core.quiet)."""
