"""Running torch modules on numpy samples: what torch-side steps and their checks share.
Imported only on the torch path (it imports torch)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.func import functional_call


def flatten_outputs(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "to_tuple"):
        value = value.to_tuple() if hasattr(value, "to_tuple") else list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flatten_outputs(item)]
    return []


def torch_feeds(feeds) -> list[tuple]:
    # copies, not views of the user's arrays: a forward with an in-place op would change them
    return [tuple(torch.tensor(np.asarray(x)) for x in f) for f in feeds]


def run_torch(module, feeds: Sequence[tuple], overrides: dict | None = None) -> list:
    """Per-sample outputs (lists of numpy arrays) of `module` with some weights overridden; the
    samples run as one batch when the graph allows it, else one by one."""
    params = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (overrides or {}).items()}
    with torch.no_grad():
        try:
            batched = tuple(torch.cat([f[i] for f in feeds]) for i in range(len(feeds[0])))
            result = [t.numpy() for t in flatten_outputs(functional_call(module, params, batched))]
            starts = np.cumsum([0] + [len(f[0]) for f in feeds])
            return [[r[s:e] for r in result] for s, e in zip(starts[:-1], starts[1:])]
        except Exception:
            return [[t.numpy() for t in flatten_outputs(functional_call(module, params, tuple(x.clone() for x in f)))]
                    for f in feeds]   # copies: an in-place op in forward must not change the next call's input
