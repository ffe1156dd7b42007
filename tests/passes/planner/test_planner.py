"""Sensitivity table, budget planner (both IRs), distillation and compile(accuracy_budget=...)."""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hewn import compile
from hewn.passes.distill.train import DistillConfig, distill
from hewn.core.errors import ConfigError, InputMismatchError
from hewn.frontends.from_torch import capture
from hewn.core.runtime import make_session, run_all
from hewn.models import REFERENCE_MODELS
from hewn.passes.lowrank.fx_svd import svd_split_torch
from hewn.passes.lowrank.factor import SVDConfig
from hewn.passes.planner.torch_backend import TorchBackend
from hewn.passes.planner.planner import PlanConfig, allocate, apply_torch, plan
from hewn.passes.planner.sensitivity import Candidate, Scorer, overrides

FAST = PlanConfig(prune_levels=(0.5,), rank_fractions=(0.25,), progress=False)


def _resnet():
    model, inputs = REFERENCE_MODELS["resnet20"]()
    gen = torch.Generator().manual_seed(3)
    calib = [(torch.randn(1, 3, 32, 32, generator=gen),) for _ in range(6)]
    return model, inputs, calib


def test_torch_svd_full_rank_is_exact_and_low_rank_monotone():
    model, inputs, _ = _resnet()
    with torch.no_grad():
        ref = model(*inputs)
        full, stats = svd_split_torch(model, SVDConfig(rank=1.0, margin=100.0, round_to=1, min_params=1))
        assert len(stats["layers"]) > 10 and torch.allclose(full(*inputs), ref, atol=1e-5, rtol=1e-5)
    assert isinstance(model.layers[0].conv1, torch.nn.Conv2d), "the input module was modified"
    torch.manual_seed(0)
    for layer, x in ((torch.nn.Conv2d(16, 32, 3, padding=1), torch.randn(2, 16, 9, 9)),
                     (torch.nn.Linear(48, 40), torch.randn(5, 48))):
        holder = torch.nn.Sequential(layer)
        with torch.no_grad():
            want = holder(x)
            errors = []
            for k in (1, 2, 4, 8, 16):
                low, _ = svd_split_torch(holder, SVDConfig(rank=k, margin=100.0, round_to=1, min_params=1))
                errors.append(float((low(x) - want).norm() / want.norm()))
        # one layer's output error is sum_{i>k} s_i^2 |v_i^T x|^2: it can only shrink as k grows
        assert all(a >= b - 1e-7 for a, b in zip(errors, errors[1:])), errors


def _torch_planner():
    model, inputs, calib = _resnet()
    cap = capture(model, inputs)
    backend = TorchBackend(cap.graph_module, cap.example_inputs, calib)
    return cap, calib, backend, Scorer(backend.outputs({}))


def test_overrides_equal_real_surgery():
    """What the sensitivity table measures (weights overridden) is what the applied plan computes."""
    cap, calib, backend, scorer = _torch_planner()
    result = plan(backend, scorer, 0.05, FAST, round_to=8)
    kinds = {c.kind for c in result.table}
    assert kinds == {"prune", "rank"}
    assert all(math.isfinite(c.error) and c.macs_saved > 0 for c in result.table)
    chosen = [c for c in result.table if c.kind == "prune"][:2] + [c for c in result.table if c.kind == "rank"][-1:]
    applied = apply_torch(cap.graph_module, cap.example_inputs, chosen)
    masked = backend.outputs(overrides(backend, chosen))
    with torch.no_grad():
        for feed, want in zip(calib, masked):
            np.testing.assert_allclose(applied(*feed).numpy(), want[0], rtol=1e-4, atol=1e-4)


def test_planner_meets_budget_and_rolls_back_in_order():
    _, _, backend, scorer = _torch_planner()
    result = plan(backend, scorer, 0.02, FAST, round_to=8)
    report = result.report()
    assert report["budget_met"] and result.measured_error <= 0.02
    assert report["sensitivity"] and all("cosine" in r for r in report["sensitivity"])
    # a budget of zero leaves no room: nothing is chosen, nothing is hidden
    nothing = plan(backend, scorer, 0.0, FAST, round_to=8)
    assert not [c for c in nothing.chosen if c.error > 0]


def test_allocate_prefers_cheap_error_and_respects_conflicts():
    a = Candidate("prune", "a", 0.5, 100, frozenset({"w1"}), unit="a", error=0.001, measures={"cosine": 0.999})
    b = Candidate("rank", "b", 0.25, 100, frozenset({"w1"}), unit="b", error=0.0001, measures={"cosine": 0.9999})
    c = Candidate("prune", "c", 0.5, 50, frozenset({"w2"}), unit="c", error=0.05, measures={"cosine": 0.95})
    chosen = allocate([a, b, c], budget=0.01)
    assert [x.layer for x in chosen] == ["b"]  # a conflicts with b (same weight); c does not fit


def test_distillation_recovers_pruned_accuracy_and_bad_train_data():
    from hewn.models.digits import digits_cnn
    from hewn.passes.prune.fx_channels import prune_torch
    from hewn.passes.prune.prune_plan import PruneConfig

    model, data = digits_cnn()
    ex = (torch.from_numpy(data.x_test[:1]),)
    pruned, _ = prune_torch(model, ex, PruneConfig(amount=0.5))
    x = torch.from_numpy(data.x_test)

    def acc(m):
        with torch.no_grad():
            return float((m(x).argmax(1).numpy() == data.y_test).mean())

    before = acc(pruned)
    xt = torch.from_numpy(data.x_train)
    batches = [(xt[i:i + 64],) for i in range(0, len(xt), 64)]
    student = copy.deepcopy(pruned)
    steps = []
    log = distill(student, model, batches, DistillConfig(steps=60, lr=3e-3, progress=False,
                                                        on_step=lambda s, loss: steps.append(loss) and False), ex)
    assert log["steps"] == 60 and log["loss"] == "kl" and len(steps) == 60
    assert acc(student) > before + 0.2 and acc(student) >= acc(model) - 0.02
    with pytest.raises(InputMismatchError, match=r"train_data batch 0\[0\] is \(4, 8, 8\)"):
        distill(copy.deepcopy(pruned), model, [(torch.zeros(4, 8, 8),)], DistillConfig(steps=1, progress=False), ex)
    with pytest.raises(InputMismatchError, match="has 3 items"):
        distill(copy.deepcopy(pruned), model, [(xt[:2], xt[:2], xt[:2])], DistillConfig(steps=1, progress=False), ex)
    with pytest.raises(InputMismatchError, match="re-iterable"):
        distill(copy.deepcopy(pruned), model, iter(batches), DistillConfig(steps=1, progress=False), ex)


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {root!r})
    from hewn import DistillConfig, distill
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    student = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 8, generator=gen),) for _ in range(8)]
    log = distill(student, teacher, data, DistillConfig(steps=8, lr=1e-2, progress=False), (data[0][0][:1],))
    rank = torch.distributed.get_rank()
    flat = torch.cat([p.detach().flatten() for p in student.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    torch.distributed.all_gather(gathered, flat)
    assert log["world_size"] == 2, log
    assert torch.equal(gathered[0], gathered[1]), "ranks diverged"
    assert log["last_loss"] < log["first_loss"], log
    # one file per rank: the two processes share stdout and interleave their prints
    open(sys.argv[1] + "/rank%d" % rank, "w").write("ok %d" % log["steps"])
    torch.distributed.barrier()  # neither rank tears gloo down while the other still uses it
    torch.distributed.destroy_process_group()
    # In the full suite (not alone) both ranks hit "terminate called without an active exception"
    # in C++ destructors at interpreter exit, after all of the above passed: skip them.
    sys.stdout.flush()
    os._exit(0)
""")


def test_distillation_under_torchrun_with_gloo(tmp_path):
    script = tmp_path / "ddp_distill.py"
    script.write_text(DDP_SCRIPT.format(root=os.getcwd()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 8 optimizer steps on each rank, weights equal (asserted inside the script)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["ok 8", "ok 8"], proc.stdout


def test_compile_with_budget_on_digits_meets_it_and_reports_the_plan():
    from hewn.models.digits import digits_cnn

    model, data = digits_cnn()
    ex = (torch.from_numpy(data.x_test[:1]),)
    calib = [(data.x_train[i:i + 1],) for i in range(16)]
    evals = [(data.x_test[i:i + 1],) for i in range(0, len(data.x_test), 2)]
    labels = data.y_test[::2]

    def accuracy(outs):
        return float((np.array([o[0].argmax() for o in outs]) == labels).mean())

    result = compile(model, "cpu", example_inputs=ex, calib_data=calib, eval_data=evals, metric=accuracy,
                     accuracy_budget=0.02, quantize=False, plan=FAST)
    plan_report = result.report["plan"]
    assert plan_report["choices"], plan_report
    assert plan_report["final"]["budget_met"] and plan_report["final"]["error"] <= 0.02
    assert result.report["after"]["macs"] < result.report["before"]["macs"]
    outs = run_all(make_session(result.onnx), [{"x": e[0]} for e in evals])
    assert abs(accuracy(outs) - plan_report["final"]["metric"]) < 1e-9


def test_compile_planner_on_onnx_input_and_unreachable_budget():
    model, inputs, calib = _resnet()
    onnx_model = compile(model, "cpu", example_inputs=inputs).onnx
    feeds = [c[0].numpy() for c in calib]
    result = compile(onnx_model, "cpu", calib_data=feeds, accuracy_budget=0.05, quantize=False, plan=FAST)
    assert result.report["plan"]["final"]["budget_met"]
    assert result.report["after"]["macs"] < result.report["before"]["macs"]
    # unreachable by structure: the plan spends 1000x the budget hoping fine-tuning wins it back, and
    # one near-zero-lr step cannot; the unchanged model meets any budget, so that is what comes back
    # (issue 29: never a model worse than one the planner already had), and the report says why
    tight = PlanConfig(prune_levels=(0.5,), rank_fractions=(0.25,), progress=False, finetune_slack=1000.0,
                       finetune_rounds=1)
    missed = compile(model, "cpu", example_inputs=inputs, calib_data=feeds, accuracy_budget=1e-4, plan=tight,
                     quantize=False, train_data=[c for c in calib[:2]],
                     distill=DistillConfig(steps=1, lr=1e-9, progress=False))
    report = missed.report["plan"]
    assert report["rollbacks"] and report["finetune"][0]["steps"] == 1
    assert "structure is left unchanged" in report["fallback"] and not report["choices"]
    assert report["budget_met"] and report["final"]["budget_met"] and report["final"]["error"] <= 1e-4


def test_planner_argument_errors():
    model, inputs, _ = _resnet()
    with pytest.raises(ConfigError, match="metric= is a function"):
        compile(model, example_inputs=inputs, accuracy_budget=0.01, metric=len)
    with pytest.raises(ConfigError, match="plan= configures the planner"):
        compile(model, example_inputs=inputs, plan=FAST)
    with pytest.raises(ConfigError, match="train_data= fine-tunes a compressed model"):
        compile(model, example_inputs=inputs, train_data=[inputs])
    with pytest.raises(InputMismatchError, match="train_data batch 0"):
        compile(model, example_inputs=inputs, accuracy_budget=0.5, train_data=[(torch.zeros(3),)],
                plan=PlanConfig(prune_levels=(0.5,), rank_fractions=(0.25,), progress=False))
    with pytest.raises(ConfigError, match="plan techniques"):
        PlanConfig(techniques=("magic",))


def _unit(name: str, error: float) -> Candidate:
    return Candidate("prune", name, 0.5, 100, frozenset({name}), unit=name, error=error,
                     measures={"cosine": 1 - error})


def test_refill_spends_budget_the_estimates_left_and_keeps_only_verified_plans():
    from hewn.passes.planner.planner import _refill

    table = [_unit(n, 0.006) for n in "xyz"]
    first = allocate(table, 0.01)
    assert len(first) == 1  # 0.006 + 0.006 would not fit by the estimates

    def sub_additive(chosen):  # errors that partly cancel: half the sum
        return 0.5 * sum(c.error for c in chosen), {}

    chosen, error, _, log = _refill(table, 0.01, first, *sub_additive(first), sub_additive)
    assert len(chosen) == 3 and error <= 0.01 and log[-1]["kept"]

    def breaks_at_three(chosen):  # three together collapse: the milder stretch must be used
        return (1.0 if len(chosen) == 3 else 0.5 * sum(c.error for c in chosen)), {}

    chosen, error, _, log = _refill(table, 0.01, first, *breaks_at_three(first), breaks_at_three)
    assert len(chosen) == 2 and error <= 0.01
    assert [r["kept"] for r in log] == [False, True]

    def additive(chosen):  # the estimate was right: nothing left to spend, nothing changes
        return sum(c.error for c in chosen), {}

    chosen, error, _, log = _refill(table, 0.007, first, *additive(first), additive)
    assert chosen == first and not log


def test_structure_budget_leaves_int8_what_it_measurably_needs():
    from hewn.passes.planner.budget import structure_budget as _structure_budget

    calls = []

    def probe(cost):
        return lambda: calls.append(cost) or cost

    assert _structure_budget(0.02, PlanConfig(), False, probe(0.001))[0] == 0.02   # no int8: all of it
    assert not calls
    assert _structure_budget(0.02, PlanConfig(structure_share=0.5), True, probe(0.001))[0] == 0.01
    assert not calls  # a configured share is not probed
    left, how = _structure_budget(0.02, PlanConfig(), True, probe(0.0001))
    assert math.isclose(left, 0.018) and how["int8_probe_error"] == 0.0001   # a 10% reserve at least
    left, _ = _structure_budget(0.02, PlanConfig(), True, probe(0.004))
    assert math.isclose(left, 0.008)                                         # 3x what int8 costs
    assert math.isclose(_structure_budget(0.02, PlanConfig(), True, probe(0.05))[0], 0.005)  # the floor
    assert math.isclose(_structure_budget(0.02, PlanConfig(), True, probe(None))[0], 0.01)


def test_compile_prune_and_distill_reports_held_out_agreement_before_and_after():
    from hewn.models.digits import digits_cnn

    model, data = digits_cnn()
    ex = (torch.from_numpy(data.x_test[:1]),)
    xt = torch.from_numpy(data.x_train)
    held_out = [(data.x_test[i:i + 1],) for i in range(0, 360, 6)]  # the export has batch 1
    result = compile(model, "cpu", example_inputs=ex, prune=0.5, quantize=False, measure_latency=False,
                     train_data=[(xt[i:i + 64],) for i in range(0, len(xt), 64)], eval_data=held_out,
                     distill=DistillConfig(steps=40, lr=3e-3, progress=False))
    log = result.report["distill"]
    assert log["held_out"] == "eval_data" and log["steps"] == 40
    assert log["cosine_after"] > log["cosine_before"] + 0.01
    # the number in the report is the emitted model's, measured independently in ORT
    ref = [model(torch.from_numpy(x)).detach().numpy() for (x,) in held_out]
    out = run_all(make_session(result.onnx), [{"x": x} for (x,) in held_out])
    cos = [float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
           for r, o in zip(ref, out) for a, b in zip(r, o[0])]
    assert abs(float(np.mean(cos)) - log["cosine_after"]) < 1e-4
