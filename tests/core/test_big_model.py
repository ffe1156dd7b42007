"""A > 2 GB model with external data compiles with its weights left on disk: peak memory stays
near one copy of the weights, the output gets its own data file and computes the same thing,
and the input files are untouched."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

from hewn.models.big import write_big_model
from tests.helpers import file_digest

PROTOBUF_LIMIT = 2**31
CHILD = """
import json, resource, sys
from hewn.core.memory import peak_rss_bytes
from hewn import compile
result = compile(sys.argv[1], "cpu", output=sys.argv[2], measure_latency=False)
print(json.dumps({"peak_rss": peak_rss_bytes(),
                  "torch_imported": "torch" in sys.modules,
                  "modified": [p["pass"] for p in result.report["passes"] if p["modified"]],
                  "verification": result.report["verification"]}))
"""


def _session(path):
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_model_over_2gb_compiles_in_about_one_copy_of_its_weights(tmp_path):
    try:
        source = write_big_model(tmp_path)
        data = tmp_path / "big.onnx.data"
        model_bytes = source.stat().st_size + data.stat().st_size
        assert model_bytes > PROTOBUF_LIMIT
        before = {p.name: file_digest(p) for p in (source, data)}
        out = tmp_path / "out" / "big_cpu.onnx"
        out.parent.mkdir()
        run = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out)], capture_output=True, text=True,
                             check=True)
        child = json.loads(run.stdout.strip().splitlines()[-1])
        assert child["peak_rss"] < 1.5 * model_bytes, (child["peak_rss"], model_bytes)
        assert not child["torch_imported"]  # an ONNX input does not pay for importing torch
        assert {"fold_constants", "remove_identity"} <= set(child["modified"])
        assert child["verification"]["passed"]
        assert {p.name: file_digest(p) for p in (source, data)} == before

        saved = onnx.load(str(out), load_external_data=False)
        assert [n.op_type for n in saved.graph.node].count("Identity") == 0
        locations = {e.value for t in saved.graph.initializer for e in t.external_data if e.key == "location"}
        assert len(locations) == 1 and locations.pop().startswith("big_cpu.onnx.")  # its own data file, not the input's
        x = np.random.default_rng(0).standard_normal((1, 8192)).astype(np.float32)
        expected = _session(source).run(None, {"x": x})[0]
        np.testing.assert_allclose(_session(out).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 5 GB: do not leave it to pytest's retention
