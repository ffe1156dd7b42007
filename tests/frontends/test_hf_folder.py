"""`hewn compile DIR --task TASK` on local Hugging Face folders (hewn.frontends.hf_folder): tiny
models with random weights saved here, with their tokenizer or image processor; nothing is
fetched. Each compiled model runs in ONNX Runtime and matches the module hewn built for the task."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hewn.cli import main

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL")

WORDS = "the a quick brown fox jumps over lazy dog cat sat on mat hello world is good bad".split()
SENTENCES = ["the quick brown fox jumps", "", "hello world is good", "the cat sat on the mat", "a lazy dog"]


def _bert_folder(folder):
    vocab = folder / "vocab.txt"
    folder.mkdir()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)


def _vit_folder(folder):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("hf")
    _bert_folder(root / "bert")
    _vit_folder(root / "vit")
    (root / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    (root / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "photos" / f"{i}.png")
    (root / "empty").mkdir()
    return root


def _cosines(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_feature_extraction_folder_compiles_to_its_sentence_embedding(hf, tmp_path, capsys):
    from hewn.frontends.hf_heads import SentenceEmbedding

    out = tmp_path / "embed.onnx"
    argv = ["compile", str(hf / "bert"), "--task", "feature-extraction", "--calib", str(hf / "sentences.txt"),
            "-o", str(out), "--quant", "off"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "  result: " in printed and "output cosine 1.0000 (lossless" in printed   # the task's metric, named
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    (output,) = model.graph.output
    assert output.name == "sentence_embedding" and _dims(output) == ["batch", 32]
    report = json.loads((tmp_path / "embed.report.json").read_text())
    assert report["frontend"]["outputs"] == ["sentence_embedding"] and report["verification"]["passed"]
    # two sentences of different lengths, padded: the mask must keep the padding out of the mean
    tok = transformers.AutoTokenizer.from_pretrained(str(hf / "bert"), local_files_only=True)
    enc = tok(["the quick brown fox jumps over the lazy dog", "hello world"], padding=True, return_tensors="pt")
    wrapper = SentenceEmbedding(transformers.AutoModel.from_pretrained(str(hf / "bert"), local_files_only=True)).eval()
    with torch.no_grad():
        expected = wrapper(enc["input_ids"], enc["attention_mask"]).numpy()
    got = ort.InferenceSession(str(out)).run(None, {k: enc[k].numpy() for k in ("input_ids", "attention_mask")})[0]
    assert got.shape == expected.shape == (2, 32)
    assert _cosines(got, expected).min() > 0.99
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_image_classification_folder_calibrates_on_a_folder_of_photos(hf, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "vit.onnx"
    argv = ["compile", str(hf / "vit"), "--task", "image-classification", "--calib", str(hf / "photos"),
            "-o", str(out)]
    assert main(argv) == 0                                      # --quant auto: --calib turns int8 on
    result_line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("  result: "))
    assert "top-1 agreement" in result_line                     # the task's metric and its value
    report = json.loads((tmp_path / "vit.report.json").read_text())
    assert "quantization" in report                             # int8 was tried (kept or refused, with why)
    model = onnx.load(str(out))
    (output,) = model.graph.output
    assert output.name == "logits" and _dims(output) == ["batch", 5]
    processor = transformers.AutoImageProcessor.from_pretrained(str(hf / "vit"), local_files_only=True)
    images = [Image.open(p).convert("RGB") for p in sorted((hf / "photos").iterdir())[:3]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    classifier = transformers.AutoModelForImageClassification.from_pretrained(str(hf / "vit"), local_files_only=True)
    with torch.no_grad():
        expected = classifier.eval()(pixel_values=pixels).logits.numpy()
    got = ort.InferenceSession(str(out)).run(None, {"pixel_values": pixels.numpy()})[0]
    assert got.shape == (3, 5)
    assert _cosines(got, expected).min() > (0.99 if "chosen" not in report["quantization"] else 0.95)


def test_text_classification_without_calib_uses_a_sentence_as_example(hf, tmp_path, capsys):
    from hewn.frontends import hf_folder

    built = hf_folder.load(hf / "bert", "text-classification")
    assert built.metric == "top1" and built.calib_data is None and built.tokenizer is None
    assert set(built.example_inputs) == {"input_ids", "attention_mask"}
    out = tmp_path / "cls.onnx"
    assert main(["compile", str(hf / "bert"), "--task", "text-classification", "-o", str(out), "--quant", "off"]) == 0
    assert "  result: " in capsys.readouterr().out
    (output,) = onnx.load(str(out)).graph.output
    assert output.name == "logits" and _dims(output) == ["batch", 2]


def test_text_calibration_is_a_re_readable_stream_of_padded_lines(hf):
    from hewn.frontends import hf_folder

    built = hf_folder.load(hf / "bert", "feature-extraction", hf / "sentences.txt")
    assert built.metric == "cosine"
    first, second = list(built.calib_data()), list(built.calib_data())
    assert len(first) == 4                                      # the empty line is no sample
    longest = max(int(s["attention_mask"].sum()) for s in first)
    for a, b in zip(first, second):
        assert set(a) == {"input_ids", "attention_mask"} and a["input_ids"].dtype == torch.int64
        assert a["input_ids"].shape == (1, longest) and torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(built.example_inputs["input_ids"], first[0]["input_ids"])


def _error(capsys, argv, expect):
    assert main(["compile", *map(str, argv)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_bad_folders_tasks_and_calibration_are_one_line_each(hf, tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "no_tokenizer").mkdir()
    (tmp_path / "no_tokenizer" / "config.json").write_text((hf / "bert" / "config.json").read_text())
    out = ["-o", tmp_path / "o.onnx"]
    _error(capsys, [tmp_path / "missing", "--task", "feature-extraction", *out], "no such folder")
    _error(capsys, [hf / "empty", "--task", "feature-extraction", *out], "holds no config.json")
    _error(capsys, [hf / "bert", "--task", "translation", *out], "feature-extraction, text-classification")
    _error(capsys, [hf / "bert", *out], "add --task")
    _error(capsys, [tmp_path / "model.onnx", "--task", "feature-extraction", *out], "drop --task")
    _error(capsys, [hf / "vit", "--task", "image-classification", "--calib", hf / "sentences.txt", *out],
           "calibrates on images")
    _error(capsys, [hf / "bert", "--task", "feature-extraction", "--calib", hf / "photos", *out],
           "calibrates on text")
    _error(capsys, [hf / "vit", "--task", "image-classification", "--calib", hf / "empty", *out],
           "holds no images")
    _error(capsys, [tmp_path / "no_tokenizer", "--task", "text-classification", *out], "holds no tokenizer")
    _error(capsys, [hf / "bert", "--task", "causal-lm", *out], "needs --calib corpus.txt")
    assert not (tmp_path / "o.onnx").exists()


def test_causal_lm_folder_takes_the_decoder_route_with_its_own_tokenizer(tmp_path, capsys):
    from tests.llm.test_cli_lm import TEXT, _tokenizer
    from tests.llm.tiny import tiny_lm

    tiny_lm("gpt2").save_pretrained(tmp_path / "gpt2")
    _tokenizer(tmp_path / "gpt2")                                # the folder holds its tokenizer, as on the hub
    (tmp_path / "corpus.txt").write_text(TEXT)
    out = tmp_path / "lm.onnx"
    assert main(["compile", str(tmp_path / "gpt2"), "--task", "causal-lm", "--calib", str(tmp_path / "corpus.txt"),
                 "-o", str(out)]) == 0
    assert "calibration perplexity" in capsys.readouterr().out
    report = json.loads((tmp_path / "lm.report.json").read_text())
    assert report["weights"]["calibration_tokens"] > 100 and report["weights"]["perplexity"] <= report["weights"]["limit"]
    names = [i.name for i in onnx.load(str(out), load_external_data=False).graph.input]
    assert names[0] == "input_ids" and any(n.startswith("past_key_values") for n in names)


def test_a_pickled_torch_file_is_refused_with_what_to_do_instead(tmp_path, capsys):
    """(issue 29) `hewn compile model.pt` was "not a readable ONNX model"; hewn never unpickles a file."""
    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pt")
    assert main(["compile", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pickled torch file" in err[0] and "hewn.compile(module" in err[0]
