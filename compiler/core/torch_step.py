"""The torch side's step interface: what changes the captured torch model before it is exported
(channel pruning, SVD splitting, the planner, distillation). A step is small and runnable alone:

    result = PruneTorch(PruneConfig(amount=0.5)).run(module, ctx)   # -> TorchStepResult(module, report)

`run_torch_steps` runs a list of them in order, as the PassManager runs ONNX passes: a failing
step is reported with the steps that ran before it. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

from hewn.core.errors import HewnError, PassError


@dataclass
class TorchContext:
    """What torch-side steps share."""

    captured: Any                    # hewn.frontends.from_torch.Captured: the original module, its fx graph, examples
    target: Any                      # hewn.targets.TargetProfile
    calib: list[tuple]               # sensitivity samples (calib_data, else the example) in forward()'s order
    held_out: list[tuple]            # verification samples (eval_data, else calib)
    held_out_from: str               # where held_out came from, for the report
    metric: Optional[Callable] = None
    train_data: Any = None
    report: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)   # output index -> why it is class scores (Reference.classes)
    metric_name: Optional[str] = None             # metric="top1" / "cosine": what budgets are judged in


@dataclass(frozen=True)
class TorchStepResult:
    module: Any                      # the model after the step (an nn.Module / fx GraphModule)
    report: dict                     # report key -> what the step did


class TorchStep:
    """Base of torch-side steps: `name`, a frozen-dataclass config, `run(module, ctx)`."""

    name: ClassVar[str]

    def __init__(self, config):
        self.config = config

    def run(self, module, ctx: TorchContext) -> TorchStepResult:  # pragma: no cover - interface
        raise NotImplementedError


def run_torch_steps(module, steps: Sequence[TorchStep], ctx: TorchContext) -> tuple[Any, dict]:
    """(the model after every step, the merged report)."""
    report: dict = {}
    done: list[str] = []
    for step in steps:
        try:
            result = step.run(module, ctx)
        except (HewnError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise PassError(step.name, done, exc) from exc
        module = result.module
        report.update(result.report)
        done.append(step.name)
    return module, report
