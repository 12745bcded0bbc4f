import json
import os

import numpy as np
import pytest

from simfusion.models.tfjs import (
    FUSED_KERNELS,
    graph_def_from_json,
    graph_ops,
    load_graph_model,
    read_weights,
)

pytestmark = pytest.mark.slow


def model_file(folder, name):
    return os.path.join(folder, f"{name}.json")


def test_quantized_weights_are_dequantized(tmp_path):
    """A manifest with float16 and uint8-affine weights, written by hand, decodes to known values."""
    half = np.array([0.5, -2.25, 1000.0], np.float16)
    codes = np.array([0, 10, 255], np.uint8)
    ints = np.array([[1, -2]], np.int32)
    (tmp_path / "w.bin").write_bytes(half.tobytes() + codes.tobytes() + ints.tobytes())
    manifest = {
        "weightsManifest": [
            {
                "paths": ["w.bin"],
                "weights": [
                    {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
                    {
                        "name": "q",
                        "shape": [3],
                        "dtype": "float32",
                        "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0},
                    },
                    {"name": "i", "shape": [1, 2], "dtype": "int32"},
                ],
            }
        ]
    }
    weights = read_weights(manifest, str(tmp_path))
    assert weights["h"].dtype == np.float32 and weights["h"].tolist() == [0.5, -2.25, 1000.0]
    assert weights["q"].dtype == np.float32 and weights["q"].tolist() == [-1.0, 4.0, 126.5]
    assert weights["i"].dtype == np.int32 and weights["i"].tolist() == [[1, -2]]
    manifest["weightsManifest"][0]["weights"].pop()
    with pytest.raises(ValueError, match="bytes"):
        read_weights(manifest, str(tmp_path))


@pytest.mark.parametrize("name, fused", [("centernet", 77), ("nanodet", 0)])
def test_every_op_is_a_tensorflow_op_after_splitting(coco_models, name, fused):
    from tensorflow.python.framework import op_def_registry

    path = model_file(coco_models, name)
    ops = graph_ops(path)
    assert sum(ops.get(op, 0) for op in FUSED_KERNELS) == fused
    with open(path) as stream:
        model = json.load(stream)
    weights = read_weights(model, coco_models)
    graph_def = graph_def_from_json(model, weights)
    split_ops = {node.op for node in graph_def.node}
    assert not split_ops & set(FUSED_KERNELS)
    assert [op for op in split_ops if op_def_registry.get(op) is None] == []
    # the converter stored every float weight as float16; they come back float32, exactly
    quantized = [w for w in model["weightsManifest"][0]["weights"] if w.get("quantization")]
    assert quantized and all(w["quantization"]["dtype"] == "float16" for w in quantized)
    for spec in quantized:
        value = weights[spec["name"]]
        assert value.dtype == np.float32 and list(value.shape) == spec["shape"]
        assert np.array_equal(value.astype(np.float16).astype(np.float32), value)
    # int64 constants (stored as int32 by tfjs) get back the dtype the graph declares
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    assert all(n.attr["value"].tensor.dtype == n.attr["dtype"].type for n in consts.values())


def test_centernet_gives_the_same_output_for_the_same_input(coco_models):
    import tensorflow as tf
    from skimage import data

    from simfusion.models.coco import centernet_detect, resized_batch

    image = resized_batch([data.astronaut()], 512)
    first = load_graph_model(model_file(coco_models, "centernet"))
    second = load_graph_model(model_file(coco_models, "centernet"))
    a = [o.numpy() for o in first(tf.constant(image))]
    b = [o.numpy() for o in second(tf.constant(image))]
    assert [o.shape for o in a] == [(1, 128, 128, 4), (1, 128, 128, 80), (1, 100, 6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    detections = a[2][0]
    assert detections[0, 5] == 0 and 0.5 < detections[0, 4] < 0.8  # a person, as tfjs finds
    # our batched decoding of the heat map is the graph's own batch-1 decoding
    (found,) = centernet_detect([data.astronaut()])
    assert np.allclose(found.boxes, detections[:, :4], atol=1e-3)
    assert np.allclose(found.scores, detections[:, 4]) and np.array_equal(found.classes, detections[:, 5])


def test_keep_subgraph_keeps_what_an_output_needs():
    import tensorflow as tf

    from simfusion.models.tfjs import keep_subgraph

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 3), name="x")
        y = tf.identity(x * 2.0, name="y")
        with tf.control_dependencies([y]):
            tf.identity(x + 1.0, name="z")
        tf.reshape(x, (-1, 2), name="head")  # fails for most inputs; nothing that z needs
    graph_def = graph.as_graph_def()
    keep_subgraph(graph_def, ["z"])
    names = {node.name for node in graph_def.node}
    assert {"x", "y", "z"} <= names and "head" not in names
    with pytest.raises(ValueError, match="no node 'w'"):
        keep_subgraph(graph_def, ["w"])


def test_a_graph_started_at_an_inner_node_runs_from_there():
    import tensorflow as tf

    from simfusion.models.tfjs import keep_subgraph, start_graph_at

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.int32, (1, 4), name="x")  # a fixed batch, an int input
        a = tf.identity(tf.cast(x, tf.float32) / 2.0, name="a")
        tf.identity(a + 1.0, name="b")
    graph_def = graph.as_graph_def()
    start_graph_at(graph_def, "a", (None, 4))
    keep_subgraph(graph_def, ["b"])
    assert "x" not in {node.name for node in graph_def.node}

    def imported():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    graph = wrapped.graph
    run = wrapped.prune(feeds=[graph.as_graph_element("a:0")], fetches=[graph.as_graph_element("b:0")])
    (out,) = run(tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4)))
    assert out.numpy().tolist() == (np.arange(12).reshape(3, 4) + 1.0).tolist()
    with pytest.raises(ValueError, match="no node 'c'"):
        start_graph_at(graph_def, "c", (None,))
