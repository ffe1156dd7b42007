import subprocess
import sys

import onnx

from compiler import compile
from models import REFERENCE_MODELS
from models.zoo import light_models, with_random_weights


def test_two_compiles_are_byte_identical():
    model = with_random_weights(onnx.load(str(light_models()["inception_v1"])))
    assert compile(model, "cpu").onnx.SerializeToString() == compile(model, "cpu").onnx.SerializeToString()
    torch_model, inputs = REFERENCE_MODELS["mobilenetv2"]()
    a = compile(torch_model, "mobile", example_inputs=inputs).onnx.SerializeToString()
    b = compile(torch_model, "mobile", example_inputs=inputs).onnx.SerializeToString()
    assert a == b


def test_identical_across_process_restarts(tmp_path):
    script = (
        "import sys, onnx; from compiler import compile; from models.zoo import light_models, with_random_weights;"
        "m = with_random_weights(onnx.load(str(light_models()['shufflenet'])));"
        "compile(m, 'cuda', output=sys.argv[1])"
    )
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.onnx"
        subprocess.run([sys.executable, "-c", script, str(out)], check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
