"""A peer test suite: ONNX's own backend node tests (1,884 models with inputs and expected outputs).
On every case ONNX Runtime itself passes, hewn's lossless pipeline must either refuse the model
with a HewnError (one line) or give the expected outputs. A sample runs in the normal suite;
`pytest -m peer` runs all of them, and all of them again through the cpu target's decoder passes."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import hewn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    CASES = sorted(collect_testcases(""), key=lambda c: c.name)

SAMPLE = CASES[::25]   # ~75 cases in the normal suite


def _ort_passes(case, inputs, expected) -> bool:
    from hewn.core.runtime import make_session

    try:
        got = make_session(case.model, optimize=False).run(None, inputs)
    except Exception:  # noqa: BLE001 - ORT does not run it: not a case for hewn
        return False
    return len(got) == len(expected) and all(_close(g, e, case) for g, e in zip(got, expected))


def _close(got, want, case) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    if got.dtype.kind in "fc":
        return bool(np.allclose(got, want, rtol=case.rtol, atol=case.atol, equal_nan=True))
    return bool(np.array_equal(got, want))


def check(case, passes=None):
    if not case.data_sets:
        pytest.skip("no data")
    inputs_list, expected = case.data_sets[0]
    names = [i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}]
    if len(names) != len(inputs_list) or any(not isinstance(x, np.ndarray) for x in [*inputs_list, *expected]):
        pytest.skip("inputs or outputs that are not plain tensors")
    inputs = dict(zip(names, inputs_list))
    if not _ort_passes(case, inputs, expected):
        pytest.skip("ONNX Runtime itself fails this case")
    try:
        result = hewn.compile(case.model, "cpu", example_inputs=inputs, quantize=False, measure_latency=False,
                              passes=passes)
    except (hewn.PassError, hewn.StageError):
        raise   # a bug in hewn, not a refusal
    except hewn.HewnError as exc:
        assert "\n" not in str(exc), str(exc)
        return "refused"
    got = result.session().run(None, inputs)
    for g, e in zip(got, expected):
        assert _close(g, e, case), f"{case.name}: the compiled model's output differs from ONNX's expected output"
    return "compiled"


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: c.name)
def test_backend_node_case_sample(case):
    check(case)


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: c.name)
def test_backend_node_case_sample_through_the_decoder_passes(case):
    """The cpu target's decoder fusions (alone, as passes=[...]) on the same sample."""
    from hewn.targets import CPU

    check(case, list(CPU.decoder))


@pytest.mark.peer
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_backend_node_case(case):
    check(case)


@pytest.mark.peer
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_backend_node_case_through_the_decoder_passes(case):
    from hewn.targets import CPU

    check(case, list(CPU.decoder))
