"""Knowledge distillation: fine-tune a compressed torch model (student) against the original
(teacher) on unlabeled data, to win back what pruning / factoring cost.

    student = distill(student, teacher, train_data, DistillConfig(epochs=3))

Loss = alpha * output loss + (1 - alpha) * feature loss (when feature pairs are given).
The output loss is KL on temperature-softened logits for classifier outputs ([batch, classes]
rows that are not unit-norm), and 1 - cosine + MSE for embeddings (unit-norm rows, e.g.
sentence embeddings). Feature pairs compare intermediate module outputs; where a pruned
student layer is narrower than the teacher's, a learned 1x1 projection adapts it (FitNets).

Launched under `torchrun`, each process trains on its shard of the batches and
DistributedDataParallel averages gradients (gloo on CPU), so every rank ends with the same
weights. Deterministic for a given seed and world size.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from hewn.core.errors import ConfigError, InputMismatchError
from hewn.core.torch_step import TorchContext, TorchStep, TorchStepResult
from hewn.core.measure import output_error
from hewn.core.torch_run import flatten_outputs, run_torch, torch_feeds
from hewn.passes.distill.config import DistillConfig


def as_inputs(batch, example_inputs: tuple, where: str) -> tuple:
    """A train_data batch -> the model's input tuple. A batch is a tensor, a tuple of tensors in
    forward()'s order, or that tuple plus one trailing label tensor (ignored: distillation learns
    from the teacher)."""
    n = len(example_inputs)
    if isinstance(batch, dict):
        raise InputMismatchError(f"{where} is a dict; give tuples of tensors in forward()'s order")
    items = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch) if isinstance(batch, (tuple, list)) else None
    if items is None:
        raise InputMismatchError(f"{where} is a {type(batch).__name__}; train_data must yield tensors or tuples "
                                 f"of {n} tensor(s) shaped like example_inputs (optionally plus labels)")
    if len(items) not in (n, n + 1):
        raise InputMismatchError(f"{where} has {len(items)} items; the model takes {n} input(s) "
                                 f"(give {n}, or {n} plus a label tensor)")
    inputs = items[:n]
    for i, (got, want) in enumerate(zip(inputs, example_inputs)):
        if not isinstance(got, torch.Tensor):
            raise InputMismatchError(f"{where}[{i}] is a {type(got).__name__}, not a torch.Tensor")
        if got.dtype != want.dtype or got.dim() != want.dim() or tuple(got.shape[1:]) != tuple(want.shape[1:]):
            raise InputMismatchError(
                f"{where}[{i}] is {tuple(got.shape)} {got.dtype}; example_inputs[{i}] is {tuple(want.shape)} "
                f"{want.dtype}: batches must match it in dtype and in every dimension but the first")
    return inputs


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.distributed.is_available():
        torch.distributed.init_process_group("gloo")
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _OutputLoss:
    def __init__(self, kind: str, temperature: float):
        self.kind, self.t = kind, temperature

    @staticmethod
    def detect(teacher_out: torch.Tensor) -> str:
        if teacher_out.dim() == 2 and teacher_out.shape[1] > 1:
            norms = teacher_out.norm(dim=1)
            return "cosine" if torch.allclose(norms, torch.ones_like(norms), atol=1e-3) else "kl"
        return "mse"

    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "kl":
            log_p = torch.log_softmax(s / self.t, dim=-1)
            q = torch.softmax(t / self.t, dim=-1)
            return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * self.t ** 2
        if self.kind == "cosine":
            s2, t2 = s.flatten(1), t.flatten(1)
            return (1 - torch.nn.functional.cosine_similarity(s2, t2, dim=1)).mean() + \
                torch.nn.functional.mse_loss(s2, t2)
        return torch.nn.functional.mse_loss(s, t)


class _Features:
    """Forward hooks that record paired module outputs, and 1x1 adapters where widths differ."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs):
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        if pairs == "auto":
            pairs = [(n, n) for n, m in s_mods.items() if n and n.count(".") <= 1 and n in t_mods
                     and not isinstance(m, (nn.Sequential, nn.ModuleList)) and list(m.children())]
        self.pairs = []
        for s_name, t_name in pairs or []:
            if s_name not in s_mods or t_name not in t_mods:
                raise ConfigError(f"feature pair ({s_name!r}, {t_name!r}): no such module in the "
                                  f"{'student' if s_name not in s_mods else 'teacher'}")
            self.pairs.append((s_name, t_name))
        self.s_out, self.t_out = {}, {}
        self.handles = []
        for s_name, t_name in self.pairs:
            self.handles.append(s_mods[s_name].register_forward_hook(self._store(self.s_out, s_name)))
            self.handles.append(t_mods[t_name].register_forward_hook(self._store(self.t_out, t_name)))
        self.adapters = nn.ModuleDict()

    @staticmethod
    def _store(into, name):
        def hook(module, args, output):
            into[name] = output if isinstance(output, torch.Tensor) else flatten_outputs(output)[0]
        return hook

    def loss(self) -> torch.Tensor:
        total = torch.zeros(())
        for s_name, t_name in self.pairs:
            s, t = self.s_out.get(s_name), self.t_out.get(t_name)
            if s is None or t is None:
                continue
            if s.shape != t.shape:
                key = s_name.replace(".", "_")
                if key not in self.adapters:
                    conv = nn.Conv2d if s.dim() == 4 else None
                    self.adapters[key] = conv(s.shape[1], t.shape[1], 1, bias=False) if conv else \
                        nn.Linear(s.shape[-1], t.shape[-1], bias=False)
                s = self.adapters[key](s)
            total = total + torch.nn.functional.mse_loss(s, t.detach())
        return total / max(len(self.pairs), 1)

    def close(self):
        for h in self.handles:
            h.remove()


def _checked_batches(train_data, example_inputs: tuple) -> tuple:
    """(the re-iterable batches, the first batch's inputs), or a clear error."""
    batches = train_data() if callable(train_data) else train_data
    if not hasattr(batches, "__iter__") or iter(batches) is batches:
        raise InputMismatchError("train_data must be re-iterable (a list, a DataLoader, or a function returning "
                                 "an iterable of batches), not a one-shot iterator or generator")
    first = next(iter(batches), None)
    if first is None:
        raise InputMismatchError("train_data is empty: give at least one batch")
    return batches, as_inputs(first, example_inputs, "train_data batch 0")


def _progress_bar(steps: int):
    from hewn.core.progress import bar

    return bar(total=steps, desc="distillation", unit="step")


def distill(student: nn.Module, teacher: nn.Module, train_data: Iterable, config: DistillConfig,
            example_inputs: tuple, should_stop: Optional[Callable[[], bool]] = None) -> dict:
    """Train `student` in place against `teacher`; returns a log (steps, first/last loss, stopped).
    The teacher is frozen while it teaches and given its requires_grad flags back afterwards: the
    planner copies it again for its next round, and a frozen copy could not be trained."""
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        return _train(student, teacher.eval(), train_data, config, example_inputs, should_stop)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _train(student, teacher, train_data, config: DistillConfig, example_inputs: tuple, should_stop) -> dict:
    rank, world = _world()
    torch.manual_seed(config.seed)
    batches, first_inputs = _checked_batches(train_data, example_inputs)
    per_epoch = sum(1 for _ in batches)
    steps = config.steps or (config.epochs or 1) * math.ceil(per_epoch / world)
    features = _Features(student, teacher, config.feature_pairs)
    model = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(student)
    student.train()
    with torch.no_grad():
        probe = flatten_outputs(teacher(*first_inputs))[0]
    kind = _OutputLoss.detect(probe) if config.loss == "auto" else config.loss
    out_loss = _OutputLoss(kind, config.temperature)
    # adapters are created lazily: run one feature pass so the optimizer sees them
    if features.pairs:
        with torch.no_grad():
            teacher(*first_inputs)
            student(*first_inputs)
            features.loss()
    opt = torch.optim.AdamW(list(student.parameters()) + list(features.adapters.parameters()), lr=config.lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    log = {"steps": 0, "loss": kind, "world_size": world, "first_loss": None, "last_loss": None, "stopped": "steps"}
    bar = _progress_bar(steps) if config.progress and rank == 0 else None
    step = 0
    try:
        for epoch in itertools.count():
            for i, batch in enumerate(batches):
                if i % world != rank:
                    continue
                inputs = as_inputs(batch, example_inputs, f"train_data batch {i}")
                with torch.no_grad():
                    t_out = flatten_outputs(teacher(*inputs))
                s_out = flatten_outputs(model(*inputs))
                loss = config.alpha * sum(out_loss(s, t) for s, t in zip(s_out, t_out))
                if features.pairs and config.alpha < 1:
                    loss = loss + (1 - config.alpha) * features.loss()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                value = float(loss.detach())
                log["first_loss"] = value if log["first_loss"] is None else log["first_loss"]
                log["last_loss"] = value
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}")
                if config.on_step is not None and config.on_step(step, value):
                    log["stopped"] = "on_step"
                    return log
                if should_stop is not None and step % config.eval_every == 0:
                    student.eval()
                    stop = should_stop()
                    student.train()
                    if stop:
                        log["stopped"] = "budget met"
                        return log
                if step >= steps:
                    return log
    finally:
        log["steps"] = step
        features.close()
        student.eval()
        if bar is not None:
            bar.close()
    return log


class DistillTorch(TorchStep):
    """Fine-tune the model against the original on ctx.train_data (DistillConfig); the report
    holds the held-out cosine to the original before and after, so it shows what training won back."""

    name = "distill"

    def run(self, module, ctx: TorchContext) -> TorchStepResult:
        teacher = ctx.captured.module
        held_out = torch_feeds(ctx.held_out)
        reference = run_torch(teacher, held_out)
        before = output_error(reference, run_torch(module, held_out))
        log = distill(module, teacher, ctx.train_data, self.config, ctx.captured.example_inputs)
        after = output_error(reference, run_torch(module, held_out))
        log.update({"cosine_before": round(before["mean_cosine"], 5), "cosine_after": round(after["mean_cosine"], 5),
                    "held_out": ctx.held_out_from})
        return TorchStepResult(module, {"distill": log})
