"""The ONNX side of hewn: load/validate ModelProtos, convert to and from the onnx-graphsurgeon IR."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from . import external
from .errors import InvalidModelError, UnsupportedModelError

ModelLike = Union[str, os.PathLike, onnx.ModelProto]

# Domains ONNX Runtime implements; a node from any other domain needs a custom-op library.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
MIN_OPSET = 9
PROTOBUF_LIMIT = 2**31 - 1
# Above this the model is saved and handed to ORT as files with external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A private, validated copy of `model` (path or ModelProto); the caller's object is never touched."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        where = "the given ModelProto"
        _check_external_paths(copy)
    elif isinstance(model, (str, os.PathLike)):
        copy, where = _read_file(Path(model)), str(model)
    else:
        raise InvalidModelError(
            f"expected an ONNX file path, an onnx.ModelProto or a torch.nn.Module, got {type(model).__name__}"
        )
    validate(copy, where)
    return copy


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such file")
    data = path.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidModelError(
            f"{path}: not a readable ONNX model ({exc}). Is the file truncated or not ONNX at all?"
        ) from None
    if not model.graph.node and not model.graph.output and not model.opset_import:
        raise InvalidModelError(f"{path}: not an ONNX model (no graph, no opset); check the file")
    # Weights in external data stay on disk (compiler/external.py); only their paths are resolved.
    external.resolve(model, path.parent, str(path))
    return model


def _check_external_paths(model: onnx.ModelProto) -> None:
    relative = [t.name for t in model.graph.initializer
                if external.is_external(t) and not Path(external.info(t).get("location", "")).is_absolute()]
    if relative:
        raise InvalidModelError(
            f"the given ModelProto keeps weight '{relative[0]}' (and {len(relative) - 1} more) in external data "
            f"relative to a folder hewn cannot know; pass the model's file path instead, or load it with "
            f"onnx.load(path) so the weights are read in")


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    raise InvalidModelError("the model imports no default ONNX opset ('' domain); it cannot be interpreted")


def validate(model: onnx.ModelProto, where: str = "model") -> None:
    """onnx.checker plus the checks hewn needs: a known opset and op domains ORT implements."""
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"{where}: opset {opset} is older than {MIN_OPSET}; upgrade it with "
            f"onnx.version_converter.convert_version(model, 13) first"
        )
    if not model.graph.node:
        raise InvalidModelError(f"{where}: the graph has no nodes; there is nothing to compile")
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS:
            raise UnsupportedModelError(
                f"{where}: node '{node.name or node.op_type}' uses op '{node.op_type}' from the custom "
                f"domain '{node.domain}', which ONNX Runtime cannot run without its custom-op library; "
                f"replace it or register the library before compiling"
            )
    try:
        if model.ByteSize() < PROTOBUF_LIMIT:
            onnx.checker.check_model(external.without_external(model) if external.has_external(model) else model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidModelError(f"{where}: invalid ONNX model: {first}") from None


def upgrade_opset(model: onnx.ModelProto, opset: int, where: str = "model") -> onnx.ModelProto:
    """Convert to `opset` with onnx's version converter (opset-9 models store initializers as inputs,
    so the IR version is raised first)."""
    model.ir_version = max(model.ir_version, 7)
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise UnsupportedModelError(
            f"{where}: the ONNX version converter could not upgrade opset {default_opset(model)} -> {opset}: "
            f"{str(exc).splitlines()[0]}. Export the model at opset {opset} or newer."
        ) from None
    return converted


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    graph = gs.import_onnx(model)
    external.attach(graph)
    return graph


def to_model(graph: gs.Graph, *, ir_version: int, provenance: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export `graph`, at least at IR 4 (initializers are not repeated as inputs) and stamping
    `hewn.pass` on the nodes that passes created."""
    external.detach(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(ir_version, needed, 4)
    model.producer_name, model.producer_version = "hewn", _version()
    for node in model.graph.node:
        origin = (provenance or {}).get(node.name)
        if origin:
            prop = node.metadata_props.add()
            prop.key, prop.value = "hewn.pass", origin
    return model


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hewn")
    except Exception:
        return "0"
