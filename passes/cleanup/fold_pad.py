"""FoldPadIntoConv: a zero, constant-mode Pad on the spatial dims that only feeds a Conv becomes
the Conv's own `pads`.

TF-style "same" padding (EfficientNet-Lite's Conv2dStaticSamePadding, Keras and Paddle exports)
comes out as an explicit Pad before each Conv. In float it costs a copy of the activation; in int8
it is worse: ORT cannot run Pad between DequantizeLinear and a quantized Conv, so every such
Conv pays a float Pad plus a Dequantize/Quantize round trip (measured on EfficientNet-Lite0 here:
Pad, QuantizeLinear and DequantizeLinear took 46% of the int8 model's kernel time).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.graph_utils import const_value, sole_consumer
from hewn.core.pass_infra import Pass, PassResult


class FoldPadIntoConv(Pass):
    name = "fold_pad_into_conv"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        folded, kept = 0, []
        for pad in list(graph.nodes):
            if pad.op != "Pad" or not pad.inputs or not pad.outputs:
                continue
            conv = sole_consumer(graph, pad.outputs[0])
            if conv is None or conv.op != "Conv" or conv.inputs[0] is not pad.outputs[0]:
                continue
            spatial, why = _spatial_pads(pad, conv)
            if spatial is None:
                kept.append(why)
                ctx.note(self.name, pad.name, f"Pad before {conv.name} left as it is: {why}")
                continue
            k = len(spatial) // 2
            own = [int(v) for v in conv.attrs.get("pads", [0] * (2 * k))]
            conv.attrs["pads"] = [a + b for a, b in zip(own, spatial)]
            conv.attrs.pop("auto_pad", None)
            conv.inputs[0] = pad.inputs[0]
            pad.outputs.clear()
            pad.inputs.clear()
            folded += 1
        if folded:
            graph.cleanup()
        return PassResult(folded > 0, {"folded": folded, "kept": len(kept)})


def _spatial_pads(pad: gs.Node, conv: gs.Node) -> tuple[Optional[list[int]], str]:
    """The Conv-layout pads ([begins..., ends...] of the spatial dims) the Pad adds, or why not."""
    if pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return None, f"mode {pad.attrs.get('mode')} is not zero padding"
    if conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None, "the Conv uses auto_pad"
    if "pads" in pad.attrs:  # opset < 11
        pads, value = np.asarray(pad.attrs["pads"]), float(pad.attrs.get("value", 0.0))
    else:
        pads = const_value(pad.inputs[1]) if len(pad.inputs) > 1 else None
        if pads is None:
            return None, "its pads are computed at run time"
        value = 0.0
        if len(pad.inputs) > 2 and pad.inputs[2].name:
            constant = const_value(pad.inputs[2])
            if constant is None or constant.size != 1:
                return None, "its constant value is computed at run time"
            value = float(constant.reshape(-1)[0])
        if len(pad.inputs) > 3 and pad.inputs[3].name:
            return None, "it pads selected axes (the axes input)"
    if value != 0.0:
        return None, f"it pads with {value}, not zero"
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    if rank < 3 or any(begins[:2]) or any(ends[:2]):
        return None, "it pads the batch or channel axis"
    if any(v < 0 for v in pads):
        return None, "it crops (negative pads)"
    return begins[2:] + ends[2:], ""
