"""The ONNX side of hewn: load/validate ModelProtos, convert to and from the onnx-graphsurgeon IR."""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Union

import numpy as np
import onnx
import onnx.inliner
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from hewn.core import external
from hewn.core.errors import InvalidModelError, UnsupportedModelError

ModelLike = Union[str, os.PathLike, onnx.ModelProto]

# Domains ONNX Runtime implements; a node from any other domain needs a custom-op library.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
MIN_OPSET = 7
PROTOBUF_LIMIT = 2**31 - 1
# Above this the model is saved and handed to ORT as files with external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(model: ModelLike, base_dir: str | os.PathLike | None = None) -> onnx.ModelProto:
    """A private, validated copy of `model` (path or ModelProto); the caller's object is never touched.
    A ModelProto whose weights are in external data needs `base_dir`, the folder its data files are
    in: locations are read from there only (never from the process's working folder)."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        where = "the given ModelProto"
        _check_text(copy, where)
        _check_external_paths(copy, base_dir)
    elif isinstance(model, (str, os.PathLike)):
        copy, where = _read_file(Path(model)), str(model)
    else:
        raise InvalidModelError(
            f"expected an ONNX file path, an onnx.ModelProto or a torch.nn.Module, got {type(model).__name__}"
        )
    if copy.functions:  # model-local functions: ORT inlines them too; passes then see their nodes
        copy = onnx.inliner.inline_local_functions(copy)
    if not any(op.domain in ("", "ai.onnx") for op in copy.opset_import):
        # a model of ai.onnx.ml ops only: no default-domain node, so any version is the same model;
        # hewn's checks and passes need one
        copy.opset_import.add(domain="", version=17)
    if copy.ir_version < 4:  # IR 3 listed every initializer as an input: a convention, not an interface
        inits = {t.name for t in copy.graph.initializer}
        kept = [i for i in copy.graph.input if i.name not in inits]
        del copy.graph.input[:]
        copy.graph.input.extend(kept)
        copy.ir_version = 4  # the first IR that allows initializers outside the inputs; nothing else differs
    _drop_unused_initializers(copy)
    _check_structure(copy, where)
    validate(copy, where)
    _check_weights(copy, where)
    return copy


def _check_structure(model: onnx.ModelProto, where: str) -> None:
    """What onnx.checker reports as "not topologically sorted" has three causes; name the one it
    is. Unsorted but acyclic graphs (ORT runs them) are sorted; repeated node names (hewn's
    reports and passes key on them) get a suffix. Both only in hewn's private copy."""
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        label = node.name or f"#{index} ({node.op_type})"
        for out in node.output:
            if out and out in producer:
                raise InvalidModelError(
                    f"{where}: tensor '{out}' is produced by two nodes ('{producer[out]}' and '{label}'); an ONNX graph "
                    f"assigns each tensor once. Rename one of the outputs")
            if out and out in available:
                raise InvalidModelError(f"{where}: node '{label}' writes '{out}', which is already a graph input or "
                                        f"initializer; rename the output")
            producer[out] = label
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name not in available and name not in producer:
                raise InvalidModelError(
                    f"{where}: node '{node.name or f'#{index} ({node.op_type})'}' reads tensor '{name}', which no node "
                    f"produces and which is neither a graph input nor an initializer; the graph is incomplete")
    order = _topological_order(graph, where)
    if order != list(range(len(graph.node))):
        nodes = [graph.node[i] for i in order]
        del graph.node[:]
        graph.node.extend(nodes)
    seen: dict[str, int] = {}
    for node in graph.node:
        if node.name:
            count = seen.get(node.name, 0)
            seen[node.name] = count + 1
            if count:
                node.name = f"{node.name}__{count + 1}"


def _topological_order(graph, where: str) -> list[int]:
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    deps = [{producer[x] for x in _reads(n) if x in producer} for n in graph.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = collections.deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) < len(graph.node):
        stuck = [graph.node[i] for i in range(len(graph.node)) if waiting[i] > 0]
        names = ", ".join(f"'{n.name or n.op_type}'" for n in stuck[:6])
        raise InvalidModelError(
            f"{where}: the graph has a cycle through node(s) {names}"
            f"{' ...' if len(stuck) > 6 else ''}; a tensor depends on itself. ONNX graphs must be acyclic "
            f"(loops belong in a Loop or Scan node)")
    return order


def _reads(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, and the outer-scope names its subgraphs (If/Loop/Scan bodies) read."""
    names = list(node.input)
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            local |= {o for n in sub.node for o in n.output}
            names += [x for n in sub.node for x in _reads(n) if x and x not in local]
    return names


INF_FORBIDDEN = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                 "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2)}


def _check_weights(model: onnx.ModelProto, where: str) -> None:
    """NaN in any weight, or ±Inf in the weights of a layer, means a diverged or corrupted model;
    every output would be NaN and every comparison meaningless. ±Inf elsewhere is legitimate
    (attention masks)."""
    weight_of = {}
    for node in model.graph.node:
        for position in INF_FORBIDDEN.get(node.op_type, ()):
            if position < len(node.input):
                weight_of[node.input[position]] = node.name or node.op_type
    for tensor in model.graph.initializer:
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        nan, inf = _count_nonfinite(tensor)
        if nan or (inf and tensor.name in weight_of):
            what = f"{nan} NaN" if nan else f"{inf} infinite"
            user = f" (read by '{weight_of[tensor.name]}')" if tensor.name in weight_of else ""
            raise InvalidModelError(
                f"{where}: weight '{tensor.name}'{user} holds {what} value(s); the model comes from a diverged "
                f"training run or a corrupted file. Re-export it from a checkpoint with finite weights")


def _count_nonfinite(tensor: onnx.TensorProto) -> tuple[int, int]:
    values = external.to_array(tensor)
    flat = values.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, 1 << 22):  # in blocks: no full-size temporaries for big weights
        block = flat[start:start + (1 << 22)]
        nan += int(np.isnan(block).sum())
        inf += int(np.isinf(block).sum())
    return nan, inf


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
    _check_text(model, str(path))
    # Weights in external data stay on disk (core/external.py); only their paths are resolved.
    external.resolve(model, path.parent, str(path))
    return model


def _check_text(message, where: str, path: str = "model") -> None:
    """Every name and text field (nodes, tensors, attributes, metadata, data locations; subgraphs
    too) must be UTF-8: protobuf hands invalid bytes back as `bytes`, which every later step would
    trip on as a bug. Byte fields (raw_data, string tensors, attribute strings) are data, not names."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for text in values:
                if not isinstance(text, str):
                    raise InvalidModelError(
                        f"{where}: {path}.{field.name} ({bytes(text)[:40]!r}) is not valid UTF-8 text; the file is "
                        f"corrupt or was not written by an ONNX exporter. Re-export the model")
        elif field.type == field.TYPE_MESSAGE:
            if field.is_repeated:
                for index, item in enumerate(value):
                    _check_text(item, where, f"{path}.{field.name}[{_label(item, index)}]")
            else:
                _check_text(value, where, f"{path}.{field.name}")


def _label(item, index: int) -> str:
    name = getattr(item, "name", None) if "name" in item.DESCRIPTOR.fields_by_name else None
    return f"'{name}'" if isinstance(name, str) and name else str(index)


def _used_names(graph: onnx.GraphProto, into: set) -> set:
    for node in graph.node:
        into.update(node.input)
        for attr in node.attribute:   # subgraphs (If/Loop/Scan) read outer-scope names
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _used_names(sub, into)
    return into


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Initializers nothing reads (not a node, a subgraph, an output or an input) leave hewn's private
    copy at once: every later copy (checker, sessions, the IR) would hold them again (an unused
    500 MB tensor cost 2.1 GB of RSS). The compiled model would not have them either."""
    used = _used_names(model.graph, {o.name for o in model.graph.output} | {i.name for i in model.graph.input})
    if all(t.name in used for t in model.graph.initializer):
        return
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _check_external_paths(model: onnx.ModelProto, base_dir) -> None:
    """An in-memory model's external data is read from `base_dir` only, with the checks a file's
    gets (inside the folder, symlinks resolved, the bytes present); without one it is refused."""
    if base_dir is not None:
        external.resolve(model, Path(base_dir), "the given ModelProto", absolute_ok=True)
        return
    names = [t.name for t, _ in external.all_tensors(model.graph) if external.is_external(t)]
    if names:
        raise InvalidModelError(
            f"the given ModelProto keeps weight '{names[0]}' (and {len(names) - 1} more) in external data, in a folder "
            f"hewn will not guess; pass base_dir= (the folder of its data files) or the model's file path, or load "
            f"it with onnx.load(path) so the weights are read in")


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    raise InvalidModelError("the model imports no default ONNX opset ('' domain); it cannot be interpreted")


def missing_at_opset(model: onnx.ModelProto) -> list[str]:
    """Default-domain ops of `model` that its own opset does not define (LayerNormalization needs 17)."""
    opset, missing = default_opset(model), []
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type not in missing:
            try:
                onnx.defs.get_schema(node.op_type, opset, "")
            except onnx.defs.SchemaError:
                missing.append(node.op_type)
    return missing


def validate(model: onnx.ModelProto, where: str = "model", *, allow_empty: bool = False) -> None:
    """onnx.checker plus the checks hewn needs: a known opset and op domains ORT implements."""
    opset = default_opset(model)
    if opset < MIN_OPSET:   # ORT runs nothing older; 7 and 8 are upgraded (verified) by the driver
        raise UnsupportedModelError(
            f"{where}: opset {opset} is older than {MIN_OPSET}, the oldest ONNX Runtime runs; upgrade it with "
            f"onnx.version_converter.convert_version(model, 13) first"
        )
    if not model.graph.node and not allow_empty:  # (a compiled Identity-only model rightly has none)
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
    """An onnx-graphsurgeon Graph of `model`. A graph input that also has an initializer (from IR 4
    on, a default the caller may override; before it, every initializer had to be listed as an
    input) stays a graph input: passes must not fold it as a constant."""
    graph = gs.import_onnx(model)
    external.attach(graph)
    tensors = graph.tensors()
    overridable = [name for name in overridable_inputs(model) if isinstance(tensors.get(name), gs.Constant)]
    if overridable:
        order = [i.name for i in model.graph.input]
        for name in overridable:
            as_graph_input(graph, tensors[name])
        graph.inputs.sort(key=lambda t: order.index(t.name) if t.name in order else len(order))
    return graph


def as_graph_input(graph: gs.Graph, const: gs.Constant) -> gs.Variable:
    """Replace `const` in `graph` by a graph input of its name, type and shape (appended to the inputs)."""
    var = gs.Variable(const.name, dtype=const.dtype, shape=list(const.shape))
    for node in list(const.outputs):
        for i, t in enumerate(node.inputs):
            if t is const:
                node.inputs[i] = var
    graph.outputs = [var if t is const else t for t in graph.outputs]
    graph.inputs.append(var)
    return var


def overridable_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs with an initializer as their default (IR >= 4)."""
    if model.ir_version < 4:
        return []
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name in inits]


def keep_interface(emitted: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """What the model says about itself survives compilation: metadata_props (class labels...),
    doc strings, model_version, domain, and the defaults of overridable inputs (the original's
    initializers for graph inputs the compiled model still has)."""
    emitted.doc_string, emitted.model_version, emitted.domain = original.doc_string, original.model_version, \
        original.domain
    emitted.graph.doc_string = original.graph.doc_string
    known = {p.key for p in emitted.metadata_props}
    for prop in original.metadata_props:
        if prop.key not in known:
            emitted.metadata_props.add(key=prop.key, value=prop.value)
    inputs = {i.name for i in emitted.graph.input}
    present = {t.name for t in emitted.graph.initializer}
    keep = set(overridable_inputs(original))
    for init in original.graph.initializer:
        if init.name in keep and init.name in inputs and init.name not in present:
            emitted.graph.initializer.append(init)
    return emitted


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
    from hewn.core.version import installed_version

    return installed_version()
