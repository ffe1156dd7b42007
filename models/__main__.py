"""`python -m hewn.models NAME OUT.onnx [--calib calib.npz]`: a reference model as an ONNX file (and
calibration samples for it) to try the CLI on, without a model of your own at hand.

The reference models have seeded random weights and the samples are seeded random inputs of the
example's shape: fine for trying hewn out and for speed, meaningless for accuracy.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from hewn.models import REFERENCE_MODELS

    parser = argparse.ArgumentParser(prog="python -m hewn.models", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(REFERENCE_MODELS))
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--calib", help="also write this many samples (--samples) as a .npz for --calib")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args(argv)

    import numpy as np

    from hewn.core.storage import save_model
    from hewn.frontends.from_torch import load
    from hewn.targets import CPU

    model, example = REFERENCE_MODELS[args.name]()
    source = load(model, example, CPU)   # exported as compile() does: dynamic batch, checked
    captured = source.captured
    save_model(source.model, args.output)
    print(f"wrote {args.output} ({args.name}; inputs {', '.join(captured.names)})")
    if args.calib:
        rng = np.random.default_rng(0)
        arrays = {}
        for name, t in zip(captured.names, captured.example_inputs):
            if t.is_floating_point():
                arrays[name] = rng.standard_normal((args.samples, *t.shape[1:])).astype(np.float32)
            else:  # token ids / masks: the example's own values, repeated
                arrays[name] = np.repeat(t.numpy()[:1], args.samples, axis=0)
        np.savez(args.calib, **arrays)
        print(f"wrote {args.calib} ({args.samples} seeded random samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
