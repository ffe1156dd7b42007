"""Calibration samples from files (the CLI's --calib): a .npz of arrays named like the model's
inputs (first axis = samples), a stacked .npy (single-input models), or a folder of .npz/.npy
files (one sample each). Read as a stream: arrays are memory-mapped where the file allows it
(.npy, and .npz members stored uncompressed, as numpy.savez writes them) and a folder's files are
opened one at a time, so memory does not grow with the number of samples. No pickles: a
calibration file is data, never code."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hewn.core.errors import InputMismatchError


def calib_source(path: str) -> Callable[[], Iterator]:
    """A function returning a fresh iterator over the samples at `path` (compile() reads the
    stream as often as it needs); everything about the files is checked before it returns."""
    p = Path(path)
    if not p.exists():
        raise InputMismatchError(f"--calib {path}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".npy", ".npz") and f.is_file())
        if not files:
            raise InputMismatchError(f"--calib {path}: the folder holds no .npy or .npz files")
        _sample(files[0])   # a bad first file is said now, the others when they are read
        return lambda: (_sample(f) for f in files)
    if p.suffix not in (".npz", ".npy"):
        raise InputMismatchError(f"--calib {path}: give a .npz file (arrays named by model input), a .npy of stacked "
                                 f"samples, or a folder of them")
    arrays = _arrays(p)
    if not arrays:
        raise InputMismatchError(f"--calib {path}: the file holds no arrays")
    counts = {len(a) if a.ndim else 0 for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputMismatchError(f"--calib {path}: arrays must share their first axis (the samples); got "
                                 f"{ {k: list(a.shape) for k, a in arrays.items()} }")
    count = counts.pop()
    if p.suffix == ".npy":
        (array,) = arrays.values()
        return lambda: ((array[i:i + 1],) for i in range(count))
    return lambda: ({k: a[i:i + 1] for k, a in arrays.items()} for i in range(count))


def token_ids(path: str) -> list[np.ndarray]:
    """A causal LM's --calib of token ids: a .npy of integers (one sequence per row, or one 1-D
    sequence), or a .npz whose arrays are; returned as 1-D int64 sequences."""
    p = Path(path)
    if not p.is_file() or p.suffix not in (".npy", ".npz"):
        raise InputMismatchError(f"--calib {path}: a causal LM takes a text corpus (.txt, with --tokenizer) or token "
                                 f"ids in a .npy/.npz file")
    sequences = []
    for name, array in _arrays(p).items():
        if not np.issubdtype(array.dtype, np.integer) or array.ndim not in (1, 2):
            raise InputMismatchError(f"--calib {path}{f' [{name}]' if name else ''}: token ids are 1-D or 2-D integer "
                                     f"arrays, got {array.dtype} {list(array.shape)}")
        sequences += [np.asarray(row, np.int64) for row in (array if array.ndim == 2 else array[None])]
    return sequences


def _sample(f: Path):
    arrays = _arrays(f)
    return arrays if f.suffix == ".npz" else tuple(arrays.values())


def _arrays(f: Path) -> dict[str, np.ndarray]:
    try:
        if f.suffix == ".npy":
            return {"": _checked(np.load(f, mmap_mode="r", allow_pickle=False), f)}
        return {k: _checked(v, f) for k, v in _npz(f).items()}
    except InputMismatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise several kinds for a bad file
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputMismatchError(f"--calib {f}: cannot read it as numeric arrays ({why}); save plain numeric "
                                 f"arrays with numpy.savez / numpy.save") from None


def _checked(array: np.ndarray, f: Path) -> np.ndarray:
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise InputMismatchError(f"--calib {f}: cannot read it as numeric arrays (it holds {array.dtype}); save plain "
                                 f"numeric arrays with numpy.savez / numpy.save")
    return array


def _npz(f: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz: members stored uncompressed are memory-mapped in place; compressed
    ones (numpy.savez_compressed) have to be read whole."""
    out = {}
    with zipfile.ZipFile(f) as archive:
        members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
        for member in members:
            key = member.filename[:-len(".npy")]
            if member.compress_type != zipfile.ZIP_STORED:
                with archive.open(member) as handle:
                    out[key] = np.lib.format.read_array(handle, allow_pickle=False)
                continue
            with open(f, "rb") as raw:
                raw.seek(member.header_offset)
                local = raw.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = member.header_offset + 30 + name_len + extra_len
                raw.seek(start)
                version = np.lib.format.read_magic(raw)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(raw)
                if dtype.hasobject:
                    raise InputMismatchError(f"--calib {f}: cannot read it as numeric arrays (member {key} holds Python "
                                             f"objects); save plain numeric arrays with numpy.savez")
                offset = raw.tell()
            out[key] = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C") if int(np.prod(shape)) else np.zeros(shape, dtype)
    return out
