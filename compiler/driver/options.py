"""compile()'s arguments checked and turned into configs, before any work is done."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from hewn.core.errors import ConfigError
from hewn.passes.distill.config import DistillConfig
from hewn.passes.planner.budget import check_budget
from hewn.passes.planner.planner import PlanConfig
from hewn.passes.prune.prune_plan import PruneConfig
from hewn.passes.quant.config import QuantizeConfig
from hewn.targets import TargetProfile, get_target


@dataclass
class Options:
    profile: TargetProfile
    planning: bool                       # accuracy_budget= without prune= or passes=: the planner decides
    budget: Optional[float]
    prune: Optional[PruneConfig]
    plan: PlanConfig
    quantize: Optional[QuantizeConfig]
    sparsify: Optional[tuple]            # ("sparsify", {options}) or None
    passes: Optional[Sequence]           # the user's own pipeline, replacing the target's
    calib_data: Any = None
    train_data: Any = None
    distill: Optional[DistillConfig] = None
    eval_data: Any = None
    metric: Optional[Callable] = None    # the user's function over eval_data (planner and final check)
    measure_latency: bool = True
    on_error: str = "raise"
    keep_dynamic: bool = False           # dynamic_shapes= asked for: even mobile keeps dynamic dims
    lm: Optional["LMOptions"] = None     # a causal LM with text/token calibration: the decoder pipeline
    base_dir: Any = None                 # the folder an in-memory ModelProto's external data is read from
    metric_name: Optional[str] = None    # metric="cosine" / "top1": what quality is stated in
    strict: bool = False                 # a change asked for by amount that loses too much is refused
    judge: Optional[Callable] = None     # metric=f(reference_outputs, outputs) -> score (1 = the original's)


    @property
    def finetune(self) -> bool:
        return self.train_data is not None


@dataclass
class LMOptions:
    """A causal LM's compile: calibration token windows and the allowed relative perplexity increase."""
    windows: list                        # 1-D int64 token arrays (hewn.frontends.lm_text.token_windows)
    budget: float                        # 0.05: perplexity may rise 5% over the float model's


def parse_options(model, target, *, calib_data, train_data, distill, eval_data, metric, prune, quantize,
                  accuracy_budget, plan, sparsity, passes, measure_latency, on_error, input_fn=None,
                  dynamic_shapes=None, example_kwargs=None, example_inputs=None, tokenizer=None,
                  base_dir=None, strict=False) -> Options:
    profile = get_target(target)
    base_dir = _base_dir(model, base_dir)
    from hewn.core.runtime import run_limit_s

    run_limit_s()   # a bad HEWN_RUN_TIMEOUT_S is refused before any work
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(strict, bool):
        raise ConfigError(f"strict= takes True or False, got {strict!r}")
    metric_name = _metric_name(metric)
    judge = metric if _compares(metric) else None   # metric(reference_outputs, outputs) -> score
    if metric_name is not None or judge is not None:
        metric = None
    if takes_lm_route(model, calib_data):
        lm = _lm_options(profile, calib_data, tokenizer, accuracy_budget, train_data=train_data, distill=distill,
                         eval_data=eval_data, metric=metric, prune=prune, quantize=quantize, plan=plan,
                         sparsity=sparsity, input_fn=input_fn, example_inputs=example_inputs,
                         example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes)
        return Options(profile, False, lm.budget, None, PlanConfig(), None, None, passes, calib_data,
                       measure_latency=measure_latency, on_error=on_error, lm=lm, base_dir=base_dir)
    if tokenizer is not None:
        raise ConfigError("tokenizer= tokenizes calib_data text for a causal LM (a Hugging Face *ForCausalLM or a "
                          "KV-cache ONNX file, with calib_data as text); this model and data take the other route")
    if input_fn is not None and not callable(input_fn):
        raise ConfigError(f"input_fn= takes a function from one item of calib_data/eval_data to the model's "
                          f"inputs (e.g. lambda batch: batch[0]), got {type(input_fn).__name__}")
    calib_data, eval_data = mapped(calib_data, input_fn), mapped(eval_data, input_fn)
    planning = accuracy_budget is not None and prune is None and passes is None
    prune_config = _prune_config(prune)
    plan_config = _plan_config(plan, planning)
    quant_config = _quant_config(quantize, calib_data, accuracy_budget, planning)
    budget = check_budget(accuracy_budget) if planning else accuracy_budget
    sparsify = _sparsity_step(sparsity)
    _check_training_args(model, train_data, distill, metric, eval_data, planning, prune_config)
    _check_torch_only(model, dynamic_shapes=dynamic_shapes, example_kwargs=example_kwargs)
    return Options(profile, planning, budget, prune_config, plan_config, quant_config, sparsify, passes,
                   calib_data, train_data, distill, eval_data, metric, measure_latency, on_error,
                   keep_dynamic=dynamic_shapes not in (None, False), base_dir=base_dir, metric_name=metric_name,
                   strict=strict, judge=judge)


def _compares(metric) -> bool:
    """metric= is a function of two arguments: (the original's outputs, the compiled model's outputs)
    over the verification samples -> a score, 1.0 for the original's (needs no eval_data)."""
    import inspect

    if not callable(metric):
        return False
    try:
        params = [p for p in inspect.signature(metric).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return False
    return len(params) == 2


def _metric_name(metric) -> Optional[str]:
    """metric="cosine" or "top1" names what quality is stated in (no eval_data needed); a function
    is checked with eval_data by _check_training_args."""
    from hewn.driver.quality import NAMED_METRICS

    if not isinstance(metric, str):
        return None
    if metric not in NAMED_METRICS:
        raise ConfigError(f"metric={metric!r} is not a metric hewn knows; give one of "
                          f"{', '.join(map(repr, NAMED_METRICS))}, or a function metric(outputs) -> float with eval_data=")
    return metric


def _base_dir(model, base_dir):
    """base_dir= names the folder an in-memory ModelProto's external data is in (a file's own
    folder is used for a path; a torch module has none)."""
    if base_dir is None:
        return None
    import onnx
    from pathlib import Path

    if not isinstance(model, onnx.ModelProto):
        raise ConfigError("base_dir= is the folder of an in-memory ModelProto's external data files; a model "
                          "given by path reads them from its own folder, a torch module has none")
    try:
        folder = Path(base_dir)
        ok = folder.is_dir()
    except (TypeError, ValueError, OSError):
        ok = False
    if not ok:
        raise ConfigError(f"base_dir={base_dir!r} is not an existing folder; give the folder that holds the "
                          f"model's external data files")
    return folder


def takes_lm_route(model, calib_data) -> bool:
    """A Hugging Face causal LM or a KV-cache ONNX model, calibrated with text or token ids. (Without
    them a causal LM compiles as any torch model: exported without a cache, example_inputs as given.)"""
    from hewn.frontends.kv_cache_onnx import is_kv_cache_onnx
    from hewn.frontends.lm_text import takes_text

    if not takes_text(calib_data):
        return False
    if sys.modules.get("torch") is not None:  # only a torch model can be one; ONNX input never loads torch
        from hewn.frontends.causal_lm import is_causal_lm
        if is_causal_lm(model):
            return True
    return is_kv_cache_onnx(model)


DEFAULT_LM_BUDGET = 0.05


def _lm_options(profile: TargetProfile, calib_data, tokenizer, accuracy_budget, **unusable) -> LMOptions:
    given = [k for k, v in unusable.items() if v is not None]
    if given:
        raise ConfigError(f"{'=, '.join(given)}= not supported for causal LMs: they take calib_data= (text with "
                          f"tokenizer=, or token ids), accuracy_budget= (the relative perplexity increase) and target=")
    if not profile.decoder_weights:
        raise ConfigError(f"causal-LM weight compression emits MatMulNBits for ONNX Runtime's CPU kernels; target "
                          f"{profile.name!r} has no decoder pipeline yet: use target='cpu'")
    if accuracy_budget is None:
        budget = DEFAULT_LM_BUDGET
    elif isinstance(accuracy_budget, (int, float)) and not isinstance(accuracy_budget, bool) \
            and 0 <= accuracy_budget < 10:
        budget = float(accuracy_budget)
    else:
        raise ConfigError(f"accuracy_budget= for a causal LM is the allowed relative perplexity increase, a float "
                          f"in [0, 10) (0.05 = +5%), got {accuracy_budget!r}")
    from hewn.frontends.lm_text import token_windows

    return LMOptions(token_windows(calib_data, tokenizer), budget)


def mapped(data, input_fn):
    """`data` with `input_fn` applied to each item, still re-iterable (a function returning a fresh
    generator): DataLoader-style (inputs, labels) batches become the model's inputs."""
    if data is None or input_fn is None:
        return data

    def items():
        for item in (data() if callable(data) else data):
            yield input_fn(item)
    return items


def _sparsity_step(sparsity):
    """sparsity=0.8: unstructured (80% of each large weight zeroed); "2:4": semi-structured."""
    if sparsity is None:
        return None
    if sparsity == "2:4":
        return ("sparsify", {"pattern": "2:4"})
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) and 0 < sparsity < 1:
        return ("sparsify", {"pattern": "unstructured", "sparsity": float(sparsity)})
    raise ConfigError(f"sparsity= takes a share in (0, 1) (unstructured) or '2:4', got {sparsity!r}")


# compile() arguments about how a torch module is called and exported, and what an ONNX model does instead
TORCH_ONLY = {"dynamic_shapes": " (how they are exported); an ONNX model keeps its own input shapes",
              "example_kwargs": "; an ONNX model takes example_inputs= as a dict {input name: array}"}


def _check_torch_only(model, **given) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return
    for name, value in given.items():
        if value is not None:
            raise ConfigError(f"{name}= applies to torch models{TORCH_ONLY[name]}")


def _check_training_args(model, train_data, distill, metric, eval_data, planning, prune_config) -> None:
    if distill is not None and not isinstance(distill, DistillConfig):
        raise ConfigError(f"distill= takes a DistillConfig, got {type(distill).__name__}")
    if distill is not None and train_data is None:
        raise ConfigError("distill= configures fine-tuning on train_data=; give train_data too")
    if metric is not None and (eval_data is None or not callable(metric)):
        raise ConfigError("metric= is a function metric(outputs) -> float (higher is better) over the outputs "
                          "on eval_data= (give both), a function metric(reference_outputs, outputs) -> score (1.0 = "
                          "the original's), or a name: 'cosine' (embeddings, features), 'top1' (class scores) or "
                          "'boxes' (YOLO-style detections)")
    if train_data is None:
        return
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        raise ConfigError("train_data= fine-tunes a torch model; an ONNX model cannot be trained here. "
                          "Pass the torch.nn.Module with example_inputs=")
    if not planning and prune_config is None:
        raise ConfigError("train_data= fine-tunes a compressed model: give accuracy_budget= (the planner) "
                          "or prune= as well")


def _plan_config(plan, planning) -> PlanConfig:
    if plan is None:
        return PlanConfig()
    if not isinstance(plan, PlanConfig):
        raise ConfigError(f"plan= takes a hewn.PlanConfig, got {type(plan).__name__}")
    if not planning:
        raise ConfigError("plan= configures the planner, which runs with accuracy_budget= (and without prune=)")
    return plan


def _quant_config(quantize, calib_data, accuracy_budget, planning=False) -> Optional[QuantizeConfig]:
    """quantize=None: quantize when calib_data is given. True needs calib_data. A QuantizeConfig
    says everything else; accuracy_budget= is its output-error budget (mean cosine >= 1 - budget)."""
    if quantize is None:
        quantize = calib_data is not None
    if quantize is False:
        if accuracy_budget is not None and not planning:
            raise ConfigError("accuracy_budget= with prune= applies to quantization; "
                              "it has no effect with quantize=False")
        return None
    if calib_data is None:
        raise ConfigError("quantize= needs calib_data=: a list of input samples (100-1000 real, "
                          "representative inputs) to measure activation ranges on")
    if quantize is True:
        config = QuantizeConfig()
    elif isinstance(quantize, QuantizeConfig):
        config = quantize
    else:
        raise ConfigError(f"quantize= takes True, False or a QuantizeConfig, got {quantize!r}")
    if accuracy_budget is not None:
        if not isinstance(accuracy_budget, (int, float)) or isinstance(accuracy_budget, bool):
            raise ConfigError(f"accuracy_budget= takes a float in [0, 1), got {accuracy_budget!r}")
        config = dataclasses.replace(config, budget=float(accuracy_budget))  # validated again on construction
    return config


def _prune_config(prune) -> Optional[PruneConfig]:
    """prune=0.5 means: remove half of the MACs; a PruneConfig says everything else."""
    if prune is None or prune is False:
        return None
    if isinstance(prune, PruneConfig):
        return prune
    if isinstance(prune, (int, float)) and not isinstance(prune, bool):
        return PruneConfig(amount=float(prune))
    raise ConfigError(f"prune= takes a float (the share of MACs to remove) or a PruneConfig, got {prune!r}")
