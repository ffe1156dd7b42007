"""The sentence a user reads when the accuracy budget was missed (also raised as a warning)."""
from __future__ import annotations

import warnings

from hewn.core.errors import HewnWarning
from typing import Optional


def statement(budget: float, final_error: float) -> Optional[str]:
    if final_error <= budget + 1e-12:
        return None
    text = (f"accuracy_budget={budget:g} was not met: the best model found has error {final_error:.4g} "
            f"(1 - cosine, or the metric drop when metric= is given). It is returned so you can inspect it; "
            f"raise the budget, give train_data= for fine-tuning, or exclude layers.")
    warnings.warn(text, HewnWarning, stacklevel=3)
    return text
