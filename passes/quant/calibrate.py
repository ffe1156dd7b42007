"""Calibrate: an analysis that runs the graph in ONNX Runtime on calibration data, one sample at a
time, and keeps a streaming histogram per float activation (memory independent of sample count).

    cal = ctx.analysis(Calibrate, graph)
    lo, hi = cal.range("conv1_out", QuantSpec("uint8"), method="entropy")
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError, InputMismatchError
from hewn.core.ir import to_model
from hewn.core.pass_infra import Analysis
from hewn.core.runtime import Feeds, InputSpec, make_session, run, to_feeds, user_samples

from hewn.passes.quant.histogram import ESTIMATORS, StreamingHistogram
from hewn.passes.quant.spec import QuantSpec
from hewn.passes.analysis.shape_inference import ShapeInfo

FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


class CalibrationData:
    """The user's calibration samples, re-iterable and checked one by one.

    `source` is a sequence of samples (tuples/lists of arrays or tensors in input order, or dicts by
    input name), or a zero-argument callable returning a fresh iterable (a generator function), so
    that 10,000 samples never need to sit in memory at once. Positions in `skip` (the samples
    verification holds out) are not calibrated on."""

    def __init__(self, source: Union[Sequence, Callable[[], Iterable]], specs: Sequence[InputSpec],
                 where: str = "calib_data", skip: frozenset = frozenset()):
        if source is None or isinstance(source, (str, bytes)) or not (callable(source) or hasattr(source, "__iter__")):
            raise InputMismatchError(
                f"{where} must be a list of input samples or a function returning an iterable of them, "
                f"got {type(source).__name__}"
            )
        if isinstance(source, Iterator):
            raise InputMismatchError(
                f"{where} is a one-shot iterator; calibration reads the data more than once. "
                f"Pass a list, or a function that returns a new iterator (e.g. lambda: make_batches())"
            )
        self.source, self.specs, self.where, self.skip = source, list(specs), where, frozenset(skip)

    def __iter__(self) -> Iterator[Feeds]:
        count = 0
        for i, sample in enumerate(self._samples()):
            if i in self.skip:
                continue
            feeds = to_feeds(sample, self.specs, f"{self.where}[{i}]")
            for name, value in feeds.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    raise InputMismatchError(
                        f"{self.where}[{i}]: input '{name}' contains NaN or Inf; calibration needs finite "
                        f"inputs (check the preprocessing of that sample)"
                    )
            count += 1
            yield feeds
        if count == 0:
            raise InputMismatchError(f"{self.where} is empty: give at least one input sample for calibration")

    def _samples(self) -> Iterator:
        return user_samples(self.source, self.where)


@dataclass
class Calibrate(Analysis):
    histograms: dict[str, StreamingHistogram]
    samples: int
    seconds: float
    source: str
    producers: dict[str, str] = field(default_factory=dict)  # tensor -> node that writes it
    infinite: dict[str, int] = field(default_factory=dict)   # tensor -> first sample where it held -Inf
    overflow: dict[str, int] = field(default_factory=dict)   # tensor -> first sample where it held +Inf/NaN

    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "Calibrate":
        observed = _observed(graph, ctx.analysis(ShapeInfo, graph))
        hists = {name: StreamingHistogram() for name in observed}
        infinite: dict[str, int] = {}
        overflow: dict[str, int] = {}

        def visit(sample, name, value):
            finite = np.isfinite(value)
            if not finite.all():
                # -Inf is how attention masks are written (such tensors stay float); +Inf or NaN is an overflow
                bad = value[~finite]
                (overflow if (np.isnan(bad) | (bad > 0)).any() else infinite).setdefault(name, sample)
                value = value[finite]
            hists[name].update(value)

        start = time.perf_counter()
        samples, source, producers = stream_tensors(graph, ctx, observed, visit)
        return cls(hists, samples, time.perf_counter() - start, source, producers, infinite, overflow)

    def range(self, tensor: str, spec: QuantSpec, method: str = "minmax", **kw) -> tuple[float, float]:
        if method not in ESTIMATORS:
            raise ConfigError(f"unknown calibration method {method!r}; choose one of {sorted(ESTIMATORS)}")
        lo, hi = ESTIMATORS[method](self.histograms[tensor], spec, **kw)
        return float(lo), float(hi)


def stream_tensors(graph: gs.Graph, ctx, names: list[str], visit) -> tuple[int, str, dict]:
    """Run the graph on the calibration data one sample at a time and call visit(sample, name, value)
    for each tensor in `names`: nothing but the current sample's tensors is ever held."""
    data, source = calibration_source(ctx)
    info = ctx.analysis(ShapeInfo, graph)
    probe = graph.copy()
    tensors = probe.tensors()
    probe.outputs = [_typed(tensors[name], info) for name in names]
    session = make_session(to_model(probe, ir_version=ctx.ir_version), optimize=False)
    wanted = set(names)
    producers = {t.name: (t.inputs[0].name if t.inputs else "graph input")
                 for t in graph.tensors().values() if t.name in wanted}
    count = 0
    for i, feeds in enumerate(_progress(data)):
        for name, value in zip(names, run(session, names, feeds)):
            if np.isnan(value).any():
                raise InputMismatchError(
                    f"calibration sample {i} produces NaN in tensor '{name}' (written by "
                    f"'{producers[name]}'); the model breaks down on that input: check its preprocessing"
                )
            visit(i, name, value)
        count += 1
    return count, source, producers


def calibration_source(ctx):
    """(samples, where they come from): calib_data when given, else the reference inputs."""
    if ctx.calibration is not None:
        return ctx.calibration, "calib_data"
    if ctx.reference is not None:
        # Seeded random inputs give ranges for the tests of a pass, not for deployment.
        return ctx.reference.feeds, "reference inputs (no calib_data given)"
    raise ConfigError(
        "quantization needs calibration data: pass calib_data= to compile(), or set "
        "ctx.calibration = CalibrationData(samples, input_specs(model)) when running passes yourself"
    )


def _observed(graph: gs.Graph, info: ShapeInfo) -> list[str]:
    """Every float activation: graph inputs and node outputs with a float dtype, in graph order."""
    names = [t.name for t in graph.inputs if info.dtype(t.name) in FLOATS]
    for node in graph.nodes:
        for t in node.outputs:
            if t.name and not isinstance(t, gs.Constant) and info.dtype(t.name) in FLOATS and node.op != "Constant":
                names.append(t.name)
    return list(dict.fromkeys(names))


def _typed(tensor: gs.Tensor, info: ShapeInfo) -> gs.Variable:
    tensor.dtype = info.dtype(tensor.name)
    return tensor


def _progress(data):
    from hewn.core.progress import bar

    total = len(data.source) if hasattr(data, "source") and hasattr(data.source, "__len__") else None
    return bar(data, total=total, desc="calibration", unit="sample")
