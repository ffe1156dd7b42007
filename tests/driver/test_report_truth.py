"""The report never contradicts the model: per-layer precision is what the emitted graph runs, no
NaN reaches JSON (null plus where it was), and the HTML page renders in a real headless browser
without horizontal overflow, without 'NaN' text and with every image decoded."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
import torch

import hewn
from hewn.core.storage import finite_json, json_text

transformers = pytest.importorskip("transformers")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def bert_int8(tmp_path_factory):
    """A BERT classifier (random weights, long HF node names) in int8."""
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=500, num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    gen = torch.Generator().manual_seed(0)
    calib = [{"input_ids": torch.randint(0, 500, (2, 16), generator=gen).numpy(),
              "attention_mask": np.ones((2, 16), np.int64)} for _ in range(8)]
    out = tmp_path_factory.mktemp("bert") / "bert_int8.onnx"
    result = hewn.compile(model, "cpu", example_inputs={k: torch.from_numpy(v[:1]) for k, v in calib[0].items()},
                          calib_data=calib, quantize=hewn.QuantizeConfig(budget=0.05, measure_speed=False),
                          output=out)  # untimed: int8 whether or not it pays on so small a model
    return result, out


def _emitted(model: onnx.ModelProto, output: str) -> str:
    """Precision of the layer that writes `output`, read here independently of hewn's code."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(output)
    while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        node = producer.get(node.input[0])
    if node is None:
        return "float"
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    if node.op_type in ("Conv", "Gemm", "MatMul"):
        return {(True, True): "int8", (False, True): "int8 weights"}.get((node.input[0] in dq, node.input[1] in dq),
                                                                          "float")
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n.op_type in ("MatMulInteger", "ConvInteger"):
            return "int8 (dynamic)"
        if n.name not in seen and n.op_type in ("Mul", "Cast", "Add"):
            seen.add(n.name)
            todo += [producer[i] for i in n.input if i in producer]
    return "float"


def test_layer_precision_is_what_the_emitted_graph_runs(bert_int8):
    result, _ = bert_int8
    layers = result.report.get("quantization", {}).get("layers")
    assert layers, "int8 was expected on this model"
    for row in layers:
        assert row["precision"] == _emitted(result.onnx, row["output"]), row
    assert any(r["precision"].startswith("int8") for r in layers)


def test_no_nan_in_json_null_with_where_it_was():
    data = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}
    safe = finite_json(data)
    assert safe["a"] is None and safe["b"] == [1.0, None] and safe["c"] == {"d": 2}
    assert [v["where"] for v in safe["nonfinite_values"]] == ["a", "b[1]"]
    json.loads(json_text(data))  # strict: a NaN token would not parse in other languages' JSON


def test_report_json_is_strict_json(bert_int8):
    _, out = bert_int8
    text = out.with_suffix(".report.json").read_text()
    assert not re.search(r"[:\[,]\s*-?(NaN|Infinity)\b", text)  # (op names like IsNaN are fine)

    def finite(value):
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            for v in value.values():
                finite(v)
        elif isinstance(value, list):
            for v in value:
                finite(v)
    finite(json.loads(text))


CHECK = """<script>window.addEventListener('load', () => {
  const root = document.documentElement, width = root.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > width + 1);
  const scrolled = [...document.querySelectorAll('.wrap')].filter(w => w.scrollWidth > w.clientWidth + 1);
  const images = [...document.images];
  const out = document.createElement('pre');
  out.id = 'hewn-check';
  out.textContent = JSON.stringify({
    page: root.scrollWidth, viewport: width, wide: wide.slice(0, 5).map(e => e.tagName + ' ' + e.textContent.slice(0, 40)),
    scrolled: scrolled.length, images: images.length,
    narrow: [...document.querySelectorAll('td.l')].filter(td => td.textContent.length > 8 && td.clientWidth < 100).map(td => td.textContent.slice(0, 40) + ' ' + td.clientWidth),
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).length,
    nan: /\\bNaN\\b/.test(document.body.innerText)});
  document.body.appendChild(out);
});</script>"""


def _browser(html_path, tmp_path, width: int) -> dict:
    page = tmp_path / f"check_{width}.html"
    page.write_text(html_path.read_text().replace("</body>", CHECK + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
            "--virtual-time-budget=5000"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / f"report_{width}.png"
    subprocess.run([*args, f"--screenshot={shot}", html_path.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot"
    start = dom.index('<pre id="hewn-check">') + len('<pre id="hewn-check">')
    return json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run does)")
def test_html_report_renders_in_headless_chromium(bert_int8, tmp_path):
    _, out = bert_int8
    html_path = out.with_suffix(".report.html")
    for width in (1280, 800):
        check = _browser(html_path, tmp_path, width)
        assert check["page"] <= check["viewport"], f"the page overflows at {width}px: {check['wide']}"
        assert not check["wide"], check["wide"]
        assert check["images"] >= 2 and check["broken"] == 0
        assert not check["nan"]
        if width == 1280:
            assert check["scrolled"] == 0, "a table needs horizontal scrolling at 1280 px"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run does)")
def test_the_llm_page_is_readable_at_1280(tmp_path):
    """(issue 29) The causal-LM page's per-layer table squeezed its node column to one character."""
    import numpy as np

    import hewn
    from tests.llm.tiny import tiny_lm

    rng = np.random.default_rng(0)
    out = tmp_path / "lm.onnx"
    hewn.compile(tiny_lm("llama"), "cpu", calib_data=[rng.integers(0, 384, 64) for _ in range(3)],
                 accuracy_budget=0.1, output=str(out), measure_latency=False)
    check = _browser(out.with_suffix(".report.html"), tmp_path, 1280)
    assert check["page"] <= check["viewport"] and not check["wide"], check["wide"]
    assert check["scrolled"] == 0, "a table needs horizontal scrolling at 1280 px"
    assert not check["narrow"], f"name cells squeezed narrower than 100 px: {check['narrow']}"
    assert not check["nan"]
