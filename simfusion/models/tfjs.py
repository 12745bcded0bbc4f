"""TensorFlow.js graph models as TensorFlow 2 functions, without the `tensorflowjs` package.

A tfjs graph model is a JSON file whose `modelTopology` is a TensorFlow GraphDef written with
protobuf's `json_format`, with the constants' values left out, and a `weightsManifest` that says
where each constant's bytes are in the `.bin` shards beside it (float32, int32 or bool, or
quantized: float16, or uint8/uint16 with a scale and minimum). The tfjs converter also fuses
ops into kernels that only tfjs has (`_FusedConv2D`, `FusedDepthwiseConv2dNative`,
`_FusedMatMul`: a conv or matmul, a bias and an activation); `split_fused_ops` writes them back
as the standard ops. The GraphDef is then imported and pruned to a concrete function from the
inputs asked for to the outputs asked for.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# manifest dtype -> numpy dtype of the stored bytes when not quantized
PLAIN_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
QUANTIZED_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
# the fused kernels tfjs has and the standard op each one's first part is
FUSED_KERNELS = {
    "_FusedConv2D": "Conv2D",
    "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
    "_FusedMatMul": "MatMul",
}
ACTIVATIONS = ("Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh", "LeakyRelu", "Prelu")
# attributes that belong to the fused kernel only, not to the op it is split into
FUSION_ATTRS = ("fused_ops", "num_args", "epsilon", "leakyrelu_alpha", "num_host_args", "filter_format")


def read_weights(model_json: Mapping[str, Any], folder: str) -> dict[str, np.ndarray]:
    """Every weight of a tfjs manifest, by name, dequantized to its original dtype."""
    out = {}
    for group in model_json["weightsManifest"]:
        data = b"".join(_read(os.path.join(folder, path)) for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            value, offset = _decode_weight(spec, data, offset)
            out[spec["name"]] = value
        if offset != len(data):
            raise ValueError(f"weight shards {group['paths']} hold {len(data)} bytes, the manifest {offset}")
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _decode_weight(spec: Mapping[str, Any], data: bytes, offset: int) -> tuple[np.ndarray, int]:
    shape = [int(s) for s in spec["shape"]]
    count = int(np.prod(shape)) if shape else 1
    quantization = spec.get("quantization")
    if quantization:
        stored = QUANTIZED_DTYPES.get(quantization["dtype"])
        if stored is None:
            raise ValueError(f"weight {spec['name']}: unsupported quantization {quantization['dtype']}")
        raw = np.frombuffer(data, stored, count, offset)
        if quantization["dtype"] == "float16":
            value = raw.astype(np.float32)
        else:  # affine: value = stored * scale + min
            value = raw.astype(np.float32) * float(quantization["scale"]) + float(quantization["min"])
        value = value.astype(PLAIN_DTYPES[quantization.get("original_dtype", spec["dtype"])])
        return value.reshape(shape), offset + raw.nbytes
    dtype = PLAIN_DTYPES.get(spec["dtype"])
    if dtype is None:
        raise ValueError(f"weight {spec['name']}: unsupported dtype {spec['dtype']}")
    raw = np.frombuffer(data, dtype, count, offset)
    return raw.reshape(shape).copy(), offset + raw.nbytes


def split_fused_ops(graph_def) -> int:
    """Rewrite tfjs's fused kernels in `graph_def` (in place) as op + BiasAdd + activation.

    The last op of each split keeps the fused node's name, so its consumers need no change.
    Returns how many nodes were split; raises ValueError on a fusion it does not know."""
    from tensorflow.core.framework import node_def_pb2

    nodes = []
    split = 0
    for node in graph_def.node:
        if node.op not in FUSED_KERNELS:
            nodes.append(node)
            continue
        nodes.extend(_split_node(node, node_def_pb2.NodeDef))
        split += 1
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    return split


def _split_node(node, NodeDef) -> list:
    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    num_args = node.attr["num_args"].i
    if (
        not fused
        or fused[0] != "BiasAdd"
        or len(fused) > 2
        or (len(fused) == 2 and fused[1] not in ACTIVATIONS)
    ):
        raise ValueError(f"{node.name}: cannot split {node.op} with fused ops {fused}")
    data_inputs = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    x, weights, extra = data_inputs[0], data_inputs[1], data_inputs[2 : 2 + num_args]
    kernel = NodeDef(name=f"{node.name}/{FUSED_KERNELS[node.op]}", op=FUSED_KERNELS[node.op])
    kernel.input.extend([x, weights, *controls])
    kernel.device = node.device
    for key, value in node.attr.items():
        if key not in FUSION_ATTRS:
            kernel.attr[key].CopyFrom(value)
    if node.op == "_FusedMatMul":
        for key in (
            "use_cudnn_on_gpu",
            "data_format",
            "strides",
            "padding",
            "dilations",
            "explicit_paddings",
        ):
            if key in kernel.attr:
                del kernel.attr[key]
    last_is_bias = len(fused) == 1
    bias = NodeDef(name=node.name if last_is_bias else f"{node.name}/BiasAdd", op="BiasAdd")
    bias.input.extend([kernel.name, extra[0]])
    bias.attr["T"].CopyFrom(node.attr["T"])
    if "data_format" in node.attr and node.op != "_FusedMatMul":
        bias.attr["data_format"].CopyFrom(node.attr["data_format"])
    out = [kernel, bias]
    if not last_is_bias:
        activation = NodeDef(name=node.name, op=fused[1])
        activation.input.append(bias.name)
        activation.attr["T"].CopyFrom(node.attr["T"])
        if fused[1] == "LeakyRelu":
            activation.attr["alpha"].f = node.attr["leakyrelu_alpha"].f or 0.2
        if fused[1] == "Prelu":  # PReLU(x) = relu(x) - alpha * relu(-x); not a TF op of its own
            raise ValueError(f"{node.name}: fused Prelu is not supported")
        out.append(activation)
    return out


def graph_def_from_json(model_json: Mapping[str, Any], weights: Mapping[str, np.ndarray]):
    """The model's GraphDef with every constant filled in from `weights` and fused ops split."""
    import tensorflow as tf
    from google.protobuf import json_format

    graph_def = json_format.ParseDict(
        model_json["modelTopology"], tf.compat.v1.GraphDef(), ignore_unknown_fields=True
    )
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            # tfjs stores int64 constants as int32: give them back the dtype the graph declares
            dtype = tf.as_dtype(node.attr["dtype"].type) if node.attr["dtype"].type else None
            value = weights[node.name]
            if dtype is not None and dtype.as_numpy_dtype != value.dtype:
                value = value.astype(dtype.as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        node.device = ""  # let TensorFlow place it (the converter pinned /device:CPU:0)
    missing = [n.name for n in graph_def.node if n.op == "Const" and not n.attr["value"].tensor.dtype]
    if missing:
        raise ValueError(f"constants without weights: {', '.join(missing[:5])}")
    split_fused_ops(graph_def)
    return graph_def


def keep_subgraph(graph_def, outputs: Sequence[str]) -> None:
    """Drop, in place, every node that none of the `outputs` nodes depends on."""
    by_name = {node.name: node for node in graph_def.node}
    missing = [name for name in outputs if name not in by_name]
    if missing:
        raise ValueError(f"the graph has no node {missing[0]!r}")
    needed, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(source.lstrip("^").split(":")[0] for source in by_name[name].input)
    kept = [node for node in graph_def.node if node.name in needed]
    del graph_def.node[:]
    graph_def.node.extend(kept)


def set_input_shape(graph_def, name: str, shape: Sequence[int | None]) -> None:
    """Give placeholder `name` a new shape (None for a free dimension), e.g. a free batch size."""
    for node in graph_def.node:
        if node.name == name and node.op == "Placeholder":
            dims = node.attr["shape"].shape
            del dims.dim[:]
            for size in shape:
                dims.dim.add().size = -1 if size is None else int(size)
            return
    raise ValueError(f"the graph has no placeholder {name!r}")


def start_graph_at(graph_def, name: str, shape: Sequence[int | None]) -> None:
    """Make node `name` a float32 placeholder of `shape` (in place): what fed it is no longer run."""
    import tensorflow as tf

    for node in graph_def.node:
        if node.name == name:
            if "T" in node.attr and node.attr["T"].type != tf.float32.as_datatype_enum:
                raise ValueError(f"node {name!r} is not float32: a graph starts only at a float32 node")
            node.op = "Placeholder"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            set_input_shape(graph_def, name, shape)
            return
    raise ValueError(f"the graph has no node {name!r}")


def load_graph_model(
    path: str,
    *,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
    start_at: Mapping[str, Sequence[int | None]] | None = None,
):
    """A tfjs graph model (`model.json` and its shards) as a TensorFlow concrete function.

    `inputs` and `outputs` are node or tensor names (``"name"`` means ``"name:0"``); by default
    the model's signature. `input_shapes` changes placeholders' shapes (a free batch size).
    `start_at` starts the graph at inner nodes: each becomes a float32 placeholder of the shape
    given, its own inputs dropped (a graph whose first ops fix the batch size and resize, as
    MoveNet's do); they are then the inputs unless `inputs` says otherwise.
    The function takes the inputs positionally and returns a list of the outputs."""
    import tensorflow as tf

    with open(path, encoding="utf-8") as stream:
        model_json = json.load(stream)
    graph_def = graph_def_from_json(model_json, read_weights(model_json, os.path.dirname(path)))
    signature = model_json.get("signature") or {}
    inputs = list(inputs or start_at or [spec["name"] for spec in signature.get("inputs", {}).values()])
    outputs = list(outputs or [spec["name"] for spec in signature.get("outputs", {}).values()])
    if not inputs or not outputs:
        raise ValueError(f"{path} has no signature: name the inputs and outputs")
    # only what the outputs need: a head sized for another input (NanoDet's FPN resizes to fixed
    # sizes) would otherwise fail to import under a new input shape
    keep_subgraph(graph_def, [n.split(":")[0] for n in outputs])
    if start_at:
        for name, shape in start_at.items():
            start_graph_at(graph_def, name.split(":")[0], shape)
        keep_subgraph(graph_def, [n.split(":")[0] for n in outputs])  # what fed them is gone
    for name, shape in (input_shapes or {}).items():
        set_input_shape(graph_def, name.split(":")[0], shape)

    def imported():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    graph = wrapped.graph
    return wrapped.prune(
        feeds=[graph.as_graph_element(_tensor_name(n)) for n in inputs],
        fetches=[graph.as_graph_element(_tensor_name(n)) for n in outputs],
    )


def run_in_batches(
    run,
    images: np.ndarray,
    prepare: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int,
    empty: Sequence[tuple[int, ...]],
) -> list[np.ndarray]:
    """A loaded graph `run` over `images` in batches of `batch_size`, each batch `prepare`d into its
    float32 input first: each output, the batches' parts concatenated (zeros of `empty`'s shapes for
    no images)."""
    import tensorflow as tf

    parts: list[list[np.ndarray]] = [[] for _ in empty]
    for start in range(0, len(images), batch_size):
        outputs = run(tf.constant(prepare(images[start : start + batch_size]), tf.float32))
        for chunks, output in zip(parts, outputs, strict=True):
            chunks.append(output.numpy())
    return [
        np.concatenate(chunks) if chunks else np.zeros(shape, np.float32)
        for chunks, shape in zip(parts, empty, strict=True)
    ]


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def graph_ops(path: str) -> dict[str, int]:
    """How many nodes of each op a tfjs graph model has (before splitting fused kernels)."""
    with open(path, encoding="utf-8") as stream:
        nodes = json.load(stream)["modelTopology"]["node"]
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    return counts


def fused_ops_of(node_json: Mapping[str, Any]) -> list[str]:
    """The fused op names of a node as written in the JSON (base64 bytes)."""
    strings = node_json.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])
    return [base64.b64decode(s).decode() for s in strings]
