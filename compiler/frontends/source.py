"""Source: what a frontend hands the ONNX side."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import onnx


@dataclass
class Source:
    """The model as the ONNX side sees it, and where it came from."""

    model: onnx.ModelProto
    info: dict                          # the report's "frontend" section
    path: Optional[Path] = None         # the input file (never overwritten)
    captured: Any = None                # hewn.frontends.from_torch.Captured for a torch model
    layout: Any = None                  # hewn.core.kv_cache.CacheLayout for a causal LM with its KV cache

    def files(self) -> list[Path]:
        """Every file the input model is made of: the .onnx file and the data files it refers to."""
        from hewn.core.external import data_files

        return ([self.path] if self.path is not None else []) + data_files(self.model)
