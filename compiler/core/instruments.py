"""Instruments the pass manager calls around each pass: timing, IR dumps, verification, provenance."""
from __future__ import annotations

import time
from pathlib import Path

import onnx

from hewn.core.errors import VerificationError
from hewn.core.ir import to_model
from hewn.core.manager import Instrument
from hewn.core.runtime import make_session, run_all
from hewn.core.measure import compare


class Timing(Instrument):
    """Wall time per pass, summed over fixed-point rounds: `seconds[name]`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def before(self, pass_, graph, ctx):
        self._start = time.perf_counter()

    def after(self, pass_, graph, ctx, result):
        self.seconds[pass_.name] = self.seconds.get(pass_.name, 0.0) + time.perf_counter() - self._start


class DumpIR(Instrument):
    """Writes the graph after every modifying pass: `03_fold_batchnorm.onnx`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.count = 0

    def after(self, pass_, graph, ctx, result):
        if not result.modified:
            return
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        model = to_model(graph.copy(), ir_version=ctx.ir_version, provenance=ctx.provenance)
        onnx.save_model(model, str(self.folder / f"{self.count:02d}_{pass_.name}.onnx"))


class Verify(Instrument):
    """After every modifying pass, run the graph in ORT on the reference inputs.

    A lossless pass must reproduce the outputs of the graph before it (to rtol/atol). After a lossy
    pass (pruning, quantization; measured by the manager's guard) the passes after it are checked
    against its outputs.
    """

    def __init__(self, rtol: float = 1e-4, atol: float = 1e-5):
        self.rtol, self.atol = rtol, atol
        self.checked: list[dict] = []
        self.current = None

    def after(self, pass_, graph, ctx, result):
        if not result.modified or ctx.reference is None:
            return
        model = to_model(graph.copy(), ir_version=ctx.ir_version)
        outputs = run_all(make_session(model), ctx.reference.feeds)
        if not pass_.lossless:  # measured by the manager's guard; the passes after it are checked against it
            self.current = outputs
            return
        expected = self.current if self.current is not None else ctx.reference.outputs
        cmp = compare(expected, outputs, rtol=self.rtol, atol=self.atol)
        self.checked.append({"pass": pass_.name, **cmp.as_dict()})
        if not cmp.passed:
            raise VerificationError(
                f"lossless pass '{pass_.name}' changed the model's outputs (max abs error {cmp.max_abs:.3g}, "
                f"max rel error {cmp.max_rel:.3g} > rtol {self.rtol})"
            )


class Provenance(Instrument):
    """Names every node a pass creates (deterministically, if the pass did not) and records
    which pass made it; the exporter stamps that as metadata_props["hewn.pass"]."""

    def __init__(self):
        self._seen: set[int] = set()

    def before(self, pass_, graph, ctx):
        self._seen = {id(node) for node in graph.nodes}

    def after(self, pass_, graph, ctx, result):
        for node in graph.nodes:
            if id(node) in self._seen:
                continue
            if not node.name:
                anchor = node.outputs[0].name if node.outputs else node.op
                node.name = ctx.names.make(pass_.name, anchor, node.op)
            ctx.provenance[node.name] = pass_.name
