"""ONNX Runtime sessions, seeded inputs and output comparison: the measuring stick of every pass."""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from hewn.core import external
from hewn.core.errors import InputMismatchError, RunTimeoutError, UnsupportedModelError

Feeds = dict[str, np.ndarray]

# graphsurgeon's constant folding opens its own sessions; keep ORT's default logger quiet too.
ort.set_default_logger_severity(3)


def session_options(threads: int = 0, prepack: bool = True) -> ort.SessionOptions:
    """The options every hewn session starts from. prepack=False keeps ORT from copying every
    weight into its kernel layout at creation (Gemma-3-270M's 1.7 GB float model: 1.1 GB resident
    after creating the session with it, 71 MB without; a run then touches the weights either way)."""
    opts = ort.SessionOptions()
    # fatal only: a failing run raises with the message; ORT's error log would print it to the terminal too
    opts.log_severity_level = 4
    opts.intra_op_num_threads = threads
    # Idle spinning threads of one session slow the next one on small machines (ANCHORS.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def file_session(path: str, *, threads: int = 0, prepack: bool = True) -> ort.InferenceSession:
    """A session on a model file (weights maybe beside it): for models too large to hold twice."""
    return ort.InferenceSession(str(path), session_options(threads, prepack), providers=["CPUExecutionProvider"])


def release_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise: a closed 1.7 GB session stays in RSS)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def make_session(model: onnx.ModelProto, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 0, optimize: bool = True, optimized_path: str | None = None) -> ort.InferenceSession:
    opts = session_options(threads)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    try:
        data, folder = external.session_bytes(model)
    except ValueError:  # protobuf cannot serialize > 2 GB: hand ORT a file with external data
        data = folder = None
    if data is not None:
        if folder is not None:  # weights on disk: ORT maps them; pre-packing would copy every one
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            opts.add_session_config_entry("session.disable_prepacking", "1")
        return ort.InferenceSession(data, opts, providers=list(providers))
    with tempfile.TemporaryDirectory(prefix="hewn-") as tmp:
        path = Path(tmp) / "model.onnx"
        external.write(model, path, "model.onnx.data")
        return ort.InferenceSession(str(path), opts, providers=list(providers))


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or str for symbolic / None for unknown dims


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        if not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value") or "untyped"
            raise UnsupportedModelError(
                f"input '{value.name}' is a {kind.replace('_type', '')} value; hewn compiles models whose inputs "
                f"are tensors: wrap the model so that it takes tensors, or export it that way")
        ttype = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
        specs.append(InputSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type), dims))
    return specs


# integer inputs that an op reads as a count or a size: 1 is always a valid guess for them
COUNT_OPERANDS = {"TopK": 1, "OneHot": 1, "Tile": 1, "Range": 2}


def integer_bounds(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """What the graph implies about its integer inputs, as [low, high) ranges: Gather indices into a
    constant table (token ids into an embedding) stay below the table's size; counts and sizes
    (TopK's k, OneHot's depth, Tile's repeats, Range's delta) are 1."""
    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    bounds: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        count = COUNT_OPERANDS.get(node.op_type)
        if count is not None and len(node.input) > count and node.input[count]:
            bounds[node.input[count]] = (1, 2)
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in tables:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dims = tables[node.input[0]]
        if dims:
            size = int(dims[axis % len(dims)])
            low, high = bounds.get(node.input[1], (0, size))
            bounds[node.input[1]] = (low, min(high, size))
    return bounds


def seeded_inputs(specs: Sequence[InputSpec], count: int, seed: int,
                  bounds: dict[str, tuple[int, int]] | None = None) -> list[Feeds]:
    """Deterministic random feeds. Symbolic dims: 1 for the leading (batch) dim, 8 elsewhere; a
    declared 0 stays 0. Integer inputs are treated as token ids (small non-negative, within
    `bounds[name]` when the model implies a range) except masks, which are ones."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for spec in specs:
            shape = tuple(d if isinstance(d, int) and d >= 0 else (1 if i == 0 else 8) for i, d in enumerate(spec.shape))
            if is_float(spec.dtype):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == np.bool_:
                feed[spec.name] = np.ones(shape, dtype=bool)
            elif "mask" in spec.name.lower():
                feed[spec.name] = np.ones(shape, dtype=spec.dtype)
            else:
                low, high = (bounds or {}).get(spec.name, (0, 100))
                high = min(high, 100, int(np.iinfo(spec.dtype).max) + 1)
                feed[spec.name] = rng.integers(low, max(high, low + 1), shape).astype(spec.dtype)
        feeds.append(feed)
    return feeds


def user_samples(data, where: str) -> Iterator:
    """The samples of a user's data (a sequence, or a function returning an iterable); an error their
    data source raises is reported as theirs (InputMismatchError), not as a failure of a pass."""
    i = 0
    try:
        for i, sample in enumerate(data() if callable(data) else data):
            yield sample
    except GeneratorExit:
        raise
    except InputMismatchError:
        raise
    except Exception as exc:
        raise InputMismatchError(f"{where}: your data source raised {type(exc).__name__} while producing sample "
                                 f"{i}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def spread(data: Iterable, count: int, seed: int = 0) -> tuple[list, int]:
    """(`count` samples drawn evenly at random from the whole of `data`, in their stream order; how
    many `data` held). One pass, `count` samples held at a time (reservoir sampling, seeded): a
    budget judged on these sees the user's data from first to last sample, not a prefix (folder
    datasets come sorted by class)."""
    rng = np.random.default_rng(seed)
    kept: list = []   # (position, sample)
    total = 0
    for total, sample in enumerate(data, 1):
        if len(kept) < count:
            kept.append((total, sample))
        else:
            j = int(rng.integers(total))
            if j < count:
                kept[j] = (total, sample)
    return [s for _, s in sorted(kept, key=lambda pair: pair[0])], total


def to_feeds(sample, specs: Sequence[InputSpec], where: str) -> Feeds:
    """One user sample (tuple/list of tensors or arrays in input order, or a dict by name) as ORT feeds."""
    names = [s.name for s in specs]
    if isinstance(sample, dict):
        unknown = sorted(set(sample) - set(names))
        missing = [n for n in names if n not in sample]
        if unknown or missing:
            raise InputMismatchError(
                f"{where}: input names {unknown or ''} are not model inputs; missing {missing or 'none'}; "
                f"the model's inputs are {names}"
            )
        values = [sample[n] for n in names]
    else:
        values = list(sample) if isinstance(sample, (tuple, list)) else [sample]
        if len(values) != len(specs):
            hint = (" (an (inputs, labels) batch? select the inputs with input_fn=lambda batch: batch[0])"
                    if len(values) == len(specs) + 1 else "")
            raise InputMismatchError(
                f"{where}: got {len(values)} input(s), the model takes {len(specs)}: {names}{hint}"
            )
    feeds = {}
    for spec, value in zip(specs, values):
        array = _as_array(value)
        _check_fits(array, spec, where)
        if np.issubdtype(spec.dtype, np.integer) and np.issubdtype(array.dtype, np.integer) and array.size:
            info = np.iinfo(spec.dtype)
            if array.min() < info.min or array.max() > info.max:  # astype would wrap them silently
                raise InputMismatchError(
                    f"{where}: input '{spec.name}' holds values {array.min()}..{array.max()}, outside the range of "
                    f"its type {np.dtype(spec.dtype)} ({info.min}..{info.max}); check the data")
        feeds[spec.name] = array.astype(spec.dtype, copy=False)
    return feeds


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: widen (exactly) to float32
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _check_fits(array: np.ndarray, spec: InputSpec, where: str) -> None:
    if array.ndim != len(spec.shape):
        raise InputMismatchError(
            f"{where}: input '{spec.name}' has rank {array.ndim} (shape {list(array.shape)}), "
            f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
        if isinstance(want, int) and want > 0 and got != want:
            raise InputMismatchError(
                f"{where}: input '{spec.name}' has shape {list(array.shape)}, the model expects "
                f"{list(spec.shape)} (axis {axis}: {got} != {want})"
            )
    same_kind = is_float(array.dtype) == is_float(spec.dtype)
    if not same_kind and array.dtype != np.bool_:
        raise InputMismatchError(
            f"{where}: input '{spec.name}' has dtype {array.dtype}, the model expects {np.dtype(spec.dtype)}"
        )


@functools.lru_cache(maxsize=None)
def symbolic_shape_inference():
    """ONNX Runtime's SymbolicShapeInference class, loaded from its file: importing it as
    onnxruntime.tools.symbolic_shape_infer runs onnxruntime/tools/__init__.py, which imports torch
    when it is installed (seconds, and a KV-cache ONNX compile must not load torch)."""
    import importlib.util
    import sys
    from pathlib import Path

    module = sys.modules.get("onnxruntime.tools.symbolic_shape_infer") or sys.modules.get(_SYMBOLIC)
    if module is None:
        path = Path(ort.__file__).parent / "tools" / "symbolic_shape_infer.py"
        spec = importlib.util.spec_from_file_location(_SYMBOLIC, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_SYMBOLIC] = module
        spec.loader.exec_module(module)
    return module.SymbolicShapeInference


_SYMBOLIC = "hewn._ort_symbolic_shape_infer"


def ort_max_opset() -> int:
    """The newest ai.onnx opset the installed ONNX Runtime has CPU kernels for (its registered
    kernels' since-versions), capped by what the installed onnx package can check and infer."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    newest = max((k.version_range[0] for k in C.get_all_opkernel_def()
                  if k.domain in ("", "ai.onnx") and k.provider == "CPUExecutionProvider"), default=21)
    return min(newest, onnx.defs.onnx_opset_version())


def is_float(dtype) -> bool:
    """numpy floats and bfloat16 (ml_dtypes, which numpy does not count as floating)."""
    return np.issubdtype(dtype, np.floating) or np.dtype(dtype).name == "bfloat16"


def run_limit_s() -> float:
    """Seconds one ORT run inside compile may take (HEWN_RUN_TIMEOUT_S, default 600): a positive,
    finite number, else a ConfigError (a `nan` would turn the limit off without a word)."""
    import math

    from hewn.core.errors import ConfigError

    text = os.environ.get("HEWN_RUN_TIMEOUT_S", "600")
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not (math.isfinite(limit) and limit > 0):
        raise ConfigError(f"HEWN_RUN_TIMEOUT_S={text!r}: give the seconds one ONNX Runtime run may take, a positive "
                          f"number (default 600)")
    return limit


def run(session: ort.InferenceSession, names, feed: Feeds) -> list[np.ndarray]:
    """session.run with a time limit, and Ctrl-C that works: ORT runs in a worker thread that a
    watchdog stops through RunOptions.terminate (a Loop whose trip count depends on the data may
    never end on guessed inputs; a signal cannot reach ORT's C++ loop)."""
    options = ort.RunOptions()
    box: list = []
    done = threading.Event()   # not Thread.join: a join that Ctrl-C interrupts can mark a running thread
                               # stopped (CPython < 3.13), and exiting while ORT still runs aborts the process

    def work():
        try:
            box.append(session.run(names, feed, options))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work, daemon=True, name="hewn-ort-run")
    worker.start()
    limit = run_limit_s()
    deadline = time.monotonic() + limit
    try:
        while not done.wait(0.05):
            if time.monotonic() > deadline:
                options.terminate = True
                done.wait(10)
                shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in feed.items())
                raise RunTimeoutError(
                    f"ONNX Runtime did not finish running the model within {limit:g} s on inputs [{shapes}] (a Loop "
                    f"or a size that depends on input values may never end on these); pass real inputs with "
                    f"calib_data= or example_inputs=, or raise the limit with HEWN_RUN_TIMEOUT_S")
    except KeyboardInterrupt:
        options.terminate = True
        done.wait(10)
        raise
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def run_all(session: ort.InferenceSession, feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
    return [run(session, None, feed) for feed in feeds]


def time_interleaved(sessions: Sequence[ort.InferenceSession], feed: dict, runs: int, *, warmup: int = 3,
                     budget_s: Optional[float] = None) -> tuple[list[float], int]:
    """(median seconds per run of each session, runs done), timed round-robin (machine drift hits
    all alike) after `warmup` runs each. With `budget_s`, stops early once that much time went by
    (3 runs at least)."""
    import statistics

    times = timings(sessions, feed, runs, warmup=warmup, budget_s=budget_s)
    return [statistics.median(t) for t in times], len(times[0])


def timed_verdict(base: ort.InferenceSession, candidate: ort.InferenceSession, feed: dict, threshold: float, *,
                  round_runs: int = 10, min_runs: int = 40, budget_s: float = 15.0) -> dict:
    """Whether `candidate` runs below `threshold` x `base`'s latency, timed interleaved in rounds
    until the ~95% interval of the ratio excludes the threshold or `budget_s` is spent: {ratio,
    low, high, runs, verdict: "faster" | "not faster" | "inside the noise"}. A decision taken on one
    short timing flipped from run to run on a loaded machine (PP-OCRv4 recognition's int8); at
    least `min_runs` each before any verdict (20 runs decided on an interval 0.76-0.97)."""
    import time

    from hewn.core.speed import ratio_interval

    started = time.perf_counter()
    before: list[float] = []
    after: list[float] = []
    warmup = 3
    while True:
        b, a = timings([base, candidate], feed, round_runs, warmup=warmup)
        warmup = 0
        before += b
        after += a
        ratio, low, high = ratio_interval(before, after)
        verdict = "faster" if high < threshold else "not faster" if low >= threshold else "inside the noise"
        if (verdict != "inside the noise" and len(before) >= min_runs) or time.perf_counter() - started > budget_s:
            return {"ratio": ratio, "low": low, "high": high, "runs": len(before), "verdict": verdict,
                    "seconds": round(time.perf_counter() - started, 2)}


def timings(sessions: Sequence[ort.InferenceSession], feed: dict, runs: int, *, warmup: int = 3,
            budget_s: Optional[float] = None) -> list[list[float]]:
    """Seconds of every timed run of each session, round-robin (see time_interleaved). The warm-up
    runs go through `run` (time limit, Ctrl-C); the timed ones through `watched`, which keeps the
    limit without a thread per run."""
    import time

    for s in sessions:
        for _ in range(max(warmup, 1)):
            run(s, None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    for _ in range(runs):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            watched(s, None, feed)
            times[i].append(time.perf_counter() - start)
        if deadline is not None and time.perf_counter() > deadline and len(times[0]) >= 3:
            break
    return times


class _Watchdog:
    """One daemon thread that stops any `watched` run older than the limit (RunOptions.terminate)."""

    def __init__(self):
        self.active: dict[int, tuple[float, ort.RunOptions, list]] = {}
        self.lock = threading.Lock()
        self.thread = None

    def start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._watch, daemon=True, name="hewn-ort-watchdog")
                self.thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self.lock:
                for deadline, options, tripped in self.active.values():
                    if now > deadline and not tripped:
                        tripped.append(True)
                        options.terminate = True


_WATCHDOG = _Watchdog()


def watched(session: ort.InferenceSession, names, feed: Feeds) -> list[np.ndarray]:
    """session.run in the calling thread under the time limit (for timing loops, where a thread per
    run would distort what is timed; a run cannot be interrupted by Ctrl-C until it returns)."""
    options, tripped = ort.RunOptions(), []
    limit = run_limit_s()
    _WATCHDOG.start()
    key = id(options)
    with _WATCHDOG.lock:
        _WATCHDOG.active[key] = (time.monotonic() + limit, options, tripped)
    try:
        return session.run(names, feed, options)
    except Exception:
        if tripped:
            shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in feed.items())
            raise RunTimeoutError(f"ONNX Runtime did not finish a run within {limit:g} s on inputs [{shapes}]; "
                                  f"raise the limit with HEWN_RUN_TIMEOUT_S if the model is meant to be that "
                                  f"slow") from None
        raise
    finally:
        with _WATCHDOG.lock:
            _WATCHDOG.active.pop(key, None)


def feeds_as_tuples(samples, specs) -> list[tuple]:
    """Samples as numpy tuples in the model's input order (what torch-side steps feed)."""
    out = []
    for i, s in enumerate(samples):
        feed = to_feeds(s, specs, f"sample {i}")
        out.append(tuple(feed[spec.name] for spec in specs))
    return out
