"""The real-data reference: trained accuracy, and the compiled model keeps every prediction."""
import numpy as np
import torch

from hewn import compile
from hewn.models.digits import accuracy, digits_cnn


def test_digits_cnn_accuracy_is_kept_by_compile():
    model, data = digits_cnn()
    torch_acc = accuracy(lambda b: model(torch.from_numpy(b)).detach().numpy(), data.x_test, data.y_test)
    assert torch_acc >= 0.98
    result = compile(model, "cpu", example_inputs=(torch.from_numpy(data.x_test[:1]),))
    session = result.session()
    onnx_acc = accuracy(lambda b: np.concatenate([session.run(None, {"x": b[i:i + 1]})[0] for i in range(len(b))]),
                        data.x_test, data.y_test)
    assert onnx_acc == torch_acc
