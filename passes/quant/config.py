"""QuantizeConfig: how Quantize chooses int8 (numpy and hewn.core.errors only, so that
`hewn.QuantizeConfig` imports neither onnxruntime nor onnx-graphsurgeon)."""
from __future__ import annotations

from dataclasses import dataclass, field

from hewn.core.errors import ConfigError
from hewn.core.fields import check_fields

from hewn.passes.quant.histogram import ESTIMATORS
from hewn.passes.quant.spec import SCHEMES


ROUNDINGS = ("nearest", "adaround")


@dataclass(frozen=True)
class QuantizeConfig:
    schemes: tuple[str, ...] = ()       # candidates; () = the target's list
    method: str = "minmax"              # calibration range estimator: minmax, percentile, entropy or mse
    budget: float = 0.01                # allowed output error: mean cosine >= 1 - budget (and top-1 agreement)
    measure_speed: bool = True          # time candidates in ORT; False = first candidate within budget (deterministic)
    min_speedup: float = 1.02           # int8 must beat float by this factor to be kept
    bias_correction: bool = True        # static schemes: also try biases corrected for int8's mean shift
    smooth: bool = True                 # dynamic schemes: also try SmoothQuant'ed weights (outliers moved in)
    rounding: str = "nearest"           # static weights: "nearest", or "adaround" (learned, minutes; kept if closer)
    exclude: tuple[str, ...] = field(default=())
    force: bool = False                 # keep int8 even when it is not faster or misses the budget (its cost
    #                                     is measured and reported; the compile warns when it loses much)
    float_heads: bool = True            # a detector's box-decoding tail stays float (heads.py)

    def __post_init__(self) -> None:  # validated at construction
        check_fields(self)
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown:
            raise ConfigError(f"unknown quantization scheme(s) {unknown}; known: {', '.join(SCHEMES)}")
        if self.method not in ESTIMATORS:   # an unknown name once made int8 fail silently, scheme by scheme
            raise ConfigError(f"unknown calibration method {self.method!r}; known: {', '.join(ESTIMATORS)}")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"QuantizeConfig.rounding is one of {', '.join(map(repr, ROUNDINGS))}, got {self.rounding!r}")
        if not self.min_speedup > 0:
            raise ConfigError(f"QuantizeConfig.min_speedup is a speed ratio (> 0), got {self.min_speedup}")
        if not 0 <= self.budget < 1:
            raise ConfigError(f"quantization budget must be in [0, 1), got {self.budget}")


__all__ = ["QuantizeConfig"]
