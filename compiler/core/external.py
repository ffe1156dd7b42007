"""Weights that stay on disk: models whose initializers live in external data files.

A > 2 GB model cannot be one protobuf, and loading its weights into memory, then into the IR,
then into an ORT session holds them three times. hewn keeps them where they are instead:

- on load, every external initializer's `location` is resolved to an absolute path (in memory
  only: the input file is never rewritten) after checking that the file holds its bytes;
- in the IR such a Constant's values are a read-only `np.memmap` of that file region, so a
  pass that reads a weight pages it in, and a pass that changes one makes a new array;
- on export, a Constant that still holds its untouched memmap is written back as the same
  external reference (no bytes copied);
- an ORT session gets the locations made relative again and the folder as
  `session.model_external_initializers_file_folder_path`, so ORT maps the file rather than
  copying it (weight pre-packing is off for such sessions: it would copy every MatMul weight);
- saving streams each tensor's bytes into the output's own data file, 64 KiB-aligned so that
  ORT can map it too.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto
from onnx_graphsurgeon.ir.tensor import LazyValues

from hewn.core.errors import InvalidModelError

ALIGN = 64 << 10           # onnx's allocation granularity for mmap-able external data
ALIGN_THRESHOLD = 1 << 20  # tensors at least this large start on an aligned offset
INLINE_BELOW = 1024        # smaller tensors stay inside the .onnx file when saving
COPY_CHUNK = 16 << 20


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def has_external(model: onnx.ModelProto) -> bool:
    return any(is_external(t) for t in model.graph.initializer)


def data_files(model: onnx.ModelProto) -> list[Path]:
    """The files the model's external initializers live in (absolute after loading)."""
    return sorted({Path(info(t)["location"]) for t in model.graph.initializer
                   if is_external(t) and "location" in info(t)})


def info(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _set_info(tensor: TensorProto, **values) -> None:
    current = {**info(tensor), **{k: str(v) for k, v in values.items()}}
    del tensor.external_data[:]
    for key in ("location", "offset", "length", "checksum"):
        if key in current:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, current[key]


def _nbytes(tensor: TensorProto) -> int:
    count = math.prod(int(d) for d in tensor.dims)  # Python ints: a crafted dim cannot overflow to a small size
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def external_bytes(model: onnx.ModelProto) -> int:
    return sum(int(info(t).get("length", _nbytes(t))) for t in model.graph.initializer if is_external(t))


def all_tensors(graph: onnx.GraphProto, top: bool = True) -> Iterator[tuple[TensorProto, bool]]:
    """Every TensorProto a graph holds, with whether it is a top-level initializer (the only ones
    that stay on disk): initializers, sparse initializers, node attributes, and the same inside
    every subgraph (If/Loop/Scan bodies), recursively."""
    for tensor in graph.initializer:
        yield tensor, top
    for sparse in graph.sparse_initializer:
        yield sparse.values, False
        yield sparse.indices, False
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t, False
            yield from ((t, False) for t in attr.tensors)
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values, False
                yield attr.sparse_tensor.indices, False
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from all_tensors(sub, top=False)


def resolve(model: onnx.ModelProto, base_dir: Path, where: str, *, absolute_ok: bool = False) -> None:
    """Check every external tensor of the model, subgraphs included, against `base_dir` (the
    model's folder, never the process's): its location must name a file inside that folder
    (symlinks resolved) that holds its bytes. Top-level initializers then point at the file by
    absolute path and stay on disk; every other external tensor (Constant attributes, weights in
    If/Loop bodies) is read in, so that no later reader resolves it against the working directory.
    `absolute_ok`: an in-memory model may already name files by absolute path (inside `base_dir`)."""
    base_dir = Path(base_dir).resolve()
    for tensor, top in list(all_tensors(model.graph)):
        if not is_external(tensor):
            continue
        path, offset, length = _checked_region(tensor, base_dir, where, absolute_ok)
        if top:
            _set_info(tensor, location=str(path), offset=offset, length=length)
        else:
            _read_in(tensor, path, offset, length)


def _checked_region(tensor: TensorProto, base_dir: Path, where: str, absolute_ok: bool) -> tuple[Path, int, int]:
    fields = info(tensor)
    location = fields.get("location", "")
    name = tensor.name
    refused = InvalidModelError(
        f"{where}: weight '{name}' names its data file {location!r}, which is not a path inside "
        f"the model's folder {base_dir}; ONNX requires a relative location there")
    try:
        path = (base_dir / location).resolve()
        inside = base_dir in path.parents
    except (OSError, ValueError, RuntimeError):  # too long, NUL bytes, a symlink loop
        raise refused from None
    if not location or (Path(location).is_absolute() and not absolute_ok) or not inside:
        raise refused
    try:
        offset, length = int(fields.get("offset", 0)), int(fields.get("length", _nbytes(tensor)))
    except ValueError:
        raise InvalidModelError(f"{where}: weight '{name}' has a non-numeric external offset or length; "
                                f"the file is corrupt") from None
    if any(int(d) < 0 for d in tensor.dims) or offset < 0 or length < 0:
        raise InvalidModelError(f"{where}: weight '{name}' has a negative dimension, offset or length "
                                f"({list(tensor.dims)}, offset {offset}, length {length}); the file is corrupt")
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    if size is None or size < offset + length:
        found = "is missing" if size is None else f"holds {size} bytes"
        raise InvalidModelError(
            f"{where}: weight '{name}' needs bytes {offset}..{offset + length} of {path}, but that file "
            f"{found}; keep the model's data file beside it under the name the model records")
    if length != _nbytes(tensor):
        raise InvalidModelError(f"{where}: weight '{name}' records {length} bytes of external data but "
                                f"its shape {list(tensor.dims)} needs {_nbytes(tensor)}; the file is corrupt")
    return path, offset, length


def _read_in(tensor: TensorProto, path: Path, offset: int, length: int) -> None:
    with open(path, "rb") as src:
        src.seek(offset)
        tensor.raw_data = src.read(length)
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def memmap(tensor: TensorProto) -> np.ndarray:
    """The tensor's bytes on disk as a read-only array; `_hewn_source` remembers where from."""
    fields = info(tensor)
    dtype = _little_endian(tensor)
    shape = tuple(tensor.dims)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    array = np.memmap(fields["location"], dtype=dtype, mode="r", offset=int(fields.get("offset", 0)), shape=shape)
    source = TensorProto()
    source.CopyFrom(tensor)
    array._hewn_source = source
    return array


def to_array(tensor: TensorProto) -> np.ndarray:
    """A tensor's values wherever they are: mapped from disk for an external one (its location
    absolute after `resolve`), read from the proto otherwise."""
    return memmap(tensor) if is_external(tensor) else onnx.numpy_helper.to_array(tensor)


class ExternalValues(LazyValues):
    """graphsurgeon's lazy weight, read from the external file by mapping instead of copying."""

    def load(self):
        return memmap(self.tensor)


def attach(graph: gs.Graph) -> None:
    """After gs.import_onnx: external initializers load as memmaps."""
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and not isinstance(values, ExternalValues) and is_external(values.tensor):
            tensor._values = ExternalValues(values.tensor)


def on_disk(tensor: gs.Tensor) -> bool:
    """A Constant whose values are still the (untouched) external file region."""
    values = getattr(tensor, "_values", None)
    return isinstance(values, ExternalValues) or getattr(values, "_hewn_source", None) is not None


def detach(graph: gs.Graph) -> None:
    """Before export: a Constant still holding its untouched memmap goes back to the reference;
    one whose values a pass replaced (pruned, sparsified, folded) is written inline, so it must
    not keep the EXTERNAL mark graphsurgeon copied from the original on import."""
    for tensor in graph.tensors().values():
        if not isinstance(tensor, gs.Constant):
            continue
        values = getattr(tensor, "_values", None)
        source = getattr(values, "_hewn_source", None) if isinstance(values, np.memmap) else None
        if source is not None:
            tensor._values = ExternalValues(source)
        elif not isinstance(values, ExternalValues) and getattr(tensor, "data_location", None) == TensorProto.EXTERNAL:
            tensor.data_location = None


@contextlib.contextmanager
def relative(model: onnx.ModelProto) -> Iterator[str | None]:
    """Within the block, external locations are relative to the folder that holds all of their
    files, which is yielded: the form onnx.checker and ORT accept (data files in several
    sub-folders of the model's folder stay where they are). Restored to absolute paths afterwards."""
    external = [t for t in model.graph.initializer if is_external(t)]
    absolute = [info(t)["location"] for t in external]
    folders = sorted({str(Path(p).parent) for p in absolute if Path(p).is_absolute()})
    if not folders:
        yield None
        return
    common = Path(os.path.commonpath(folders))
    try:
        for tensor, path in zip(external, absolute):
            _set_info(tensor, location=Path(path).relative_to(common).as_posix())
        yield str(common)
    finally:
        for tensor, path in zip(external, absolute):
            _set_info(tensor, location=path)


def without_external(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for onnx.checker, whose external-data check reads files relative to the working
    directory: external weights become typed graph inputs (their bytes were checked on load)."""
    light = onnx.ModelProto()
    _copy_except(model, light, skip={"graph"})
    _copy_except(model.graph, light.graph, skip={"initializer"})
    declared = {v.name for v in light.graph.input}
    for tensor in model.graph.initializer:
        if not is_external(tensor):
            light.graph.initializer.add().CopyFrom(tensor)
        elif tensor.name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return light


def session_bytes(model: onnx.ModelProto) -> tuple[bytes, str | None]:
    """The model serialized for ORT, and the folder of its external data (None when it has none)
    for `session.model_external_initializers_file_folder_path`."""
    with relative(model) as folder:
        return model.SerializeToString(), folder


def write(model: onnx.ModelProto, model_path: Path, data_name: str, *, name_by_content: bool = False) -> str:
    """Save with every initializer of INLINE_BELOW bytes or more in `data_name` beside
    `model_path`: external ones stream from their file, inline ones are written one at a time.
    With `name_by_content`, the data file is named `<data_name stem>.<16 hex of its sha256>.data`
    instead, so that a save over an earlier build never writes into the file that build reads
    (storage.save_model). Returns the data file's name. `model` itself is not modified."""
    staged = onnx.ModelProto()
    _copy_except(model, staged, skip={"graph"})
    _copy_except(model.graph, staged.graph, skip={"initializer"})
    digest = hashlib.sha256()
    moved = []
    with open(model_path.parent / data_name, "wb") as handle:
        out = _Hashing(handle, digest)
        for tensor in model.graph.initializer:
            copy = staged.graph.initializer.add()
            if not is_external(tensor):
                if tensor.ByteSize() < INLINE_BELOW or tensor.data_type == TensorProto.STRING:
                    copy.CopyFrom(tensor)
                    continue
                _copy_except(tensor, copy, skip=set(TYPED_FIELDS))
                if tensor.HasField("raw_data"):   # already little-endian bytes: no array copy
                    size = len(tensor.raw_data)
                    offset = _align(out, size)
                    out.write(tensor.raw_data)
                else:
                    raw = onnx.numpy_helper.to_array(tensor).astype(_little_endian(tensor), copy=False).tobytes()
                    size = len(raw)
                    offset = _align(out, size)
                    out.write(raw)
            else:
                copy.CopyFrom(tensor)
                size = _nbytes(tensor)
                offset = _align(out, size)
                _copy_region(info(tensor), out, size)
            copy.data_location = TensorProto.EXTERNAL
            del copy.external_data[:]
            moved.append((copy, offset, size))
    name = data_name
    if name_by_content:
        stem = data_name[:-len(".data")] if data_name.endswith(".data") else data_name
        name = f"{stem}.{digest.hexdigest()[:16]}.data"
        os.replace(model_path.parent / data_name, model_path.parent / name)
    for copy, offset, size in moved:
        _set_info(copy, location=name, offset=offset, length=size)
    onnx.save_model(staged, str(model_path))
    return name


class _Hashing:
    """A write-only file that hashes what goes through it."""

    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def write(self, data) -> None:
        self.digest.update(data)
        self.handle.write(data)

    def tell(self) -> int:
        return self.handle.tell()


TYPED_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _little_endian(tensor: TensorProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")


def _align(out, size: int) -> int:
    position = out.tell()
    if size >= ALIGN_THRESHOLD and position % ALIGN:
        padding = ALIGN - position % ALIGN
        out.write(b"\0" * padding)
        position += padding
    return position


def _copy_region(fields: dict, out, size: int) -> None:
    with open(fields["location"], "rb") as src:
        src.seek(int(fields.get("offset", 0)))
        left = size
        while left:
            chunk = src.read(min(COPY_CHUNK, left))
            if not chunk:
                raise InvalidModelError(f"{fields['location']} ended before its weight data did")
            out.write(chunk)
            left -= len(chunk)


def _copy_except(src, dst, skip: set[str]) -> None:
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)
