"""How one accuracy budget is split between structure (prune/SVD, planned first) and int8
(decided afterwards by Quantize against the original, so it spends what structure left)."""
from __future__ import annotations

from typing import Callable, Optional

from hewn.core.errors import ConfigError

INT8_SHARE_FLOOR = 0.25   # structure keeps at least this share of the budget
INT8_MARGIN = 3.0         # int8's error on a compressed model grows; reserve this multiple of its cost


def check_budget(accuracy_budget) -> float:
    if not isinstance(accuracy_budget, (int, float)) or isinstance(accuracy_budget, bool) \
            or not 0 <= accuracy_budget < 1:
        raise ConfigError(f"accuracy_budget= takes a float in [0, 1), got {accuracy_budget!r}")
    return float(accuracy_budget)


def structure_budget(budget: float, config, quantizing: bool,
                     probe: Optional[Callable[[], Optional[float]]] = None) -> tuple[float, dict]:
    """The part of the budget the structure plan may spend: all of it without int8; with int8, a
    fixed share when configured, else the budget less what int8 measurably costs on the original
    (probe() -> int8's output error, or None when int8 does not fit at all)."""
    if not quantizing:
        return budget, {"structure_budget_from": "no int8 follows"}
    if config.structure_share is not None or probe is None:
        share = config.structure_share if config.structure_share is not None else 0.5
        return budget * share, {"structure_budget_from": f"structure_share {share}"}
    cost = probe()
    if cost is None:
        return budget * 0.5, {"structure_budget_from": "int8 probe found no int8 within budget; half"}
    left = max(budget * INT8_SHARE_FLOOR, budget - max(INT8_MARGIN * cost, 0.1 * budget))
    return left, {"structure_budget_from": "int8 probe", "int8_probe_error": round(cost, 6)}
