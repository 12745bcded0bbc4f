"""Every view the product knows: its name, what it is computed from, and how it is encoded.

Adding a view is one module (its pure core) plus one line in `VIEWS`. Kinds:
- `autoencoder`: one convolutional autoencoder trained per catalog on the view's images
  (simfusion.learn.autoencoder); a view name the registry does not know is one of these, trained
  on the images under `<base>/<name>/`, so a user's own folder of view images works too;
- `pretrained`: a pretrained network's features of its source image (HED's VGG16 backbone,
  a block pooled to a grid with square-root pooling), nothing trained;
- `computed`: a fixed function of its source image (`compute`, a batch -> (N, d) vectors);
- `student`: a small CNN trained per catalog to predict pseudo-labels, the k-means clusters of
  its teacher views' features (no labels; simfusion.learn.students).

`source` is the view image a view reads: the thumbnail, or one of the saliency stage's images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from simfusion.views.hog import hog_features
from simfusion.views.mobilenet import mobilenet_deep_features, mobilenet_features, mobilenet_late_features
from simfusion.views.movenet import movenet_features, movenet_late_features
from simfusion.views.nanodet import nanodet_features
from simfusion.views.saliency import VIEW_NAMES as SALIENCY_VIEWS
from simfusion.views.tiny import tiny_features

log = logging.getLogger(__name__)

AUTOENCODER, PRETRAINED, COMPUTED, STUDENT = "autoencoder", "pretrained", "computed", "student"
KINDS = (AUTOENCODER, PRETRAINED, COMPUTED, STUDENT)
THUMBNAIL = "thumbnail"
# the view images the stages write, from which every view is computed
IMAGE_VIEWS = (THUMBNAIL, *SALIENCY_VIEWS)
HED_BLOCKS = ("block3", "block4", "block5")


@dataclass(frozen=True)
class View:
    """One view: `kind` (see the module), `source` image view, gray (single-channel) images or not,
    kind-specific `options`, and for a computed view its function."""

    name: str
    kind: str = AUTOENCODER
    source: str = ""
    gray: bool = False
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    compute: Callable[[np.ndarray], np.ndarray] | None = None
    scene_safe: bool = True  # False: left out of the index's scene profile (`scene_safe` below)

    @property
    def image(self) -> str:
        """The view image it reads."""
        return self.source or self.name

    @property
    def trained(self) -> bool:
        """Whether train.py fits a model for it on the catalog."""
        return self.kind in (AUTOENCODER, STUDENT)


def _options(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        View("thumbnail"),
        View("foreground"),
        View("edges", gray=True),
        View("saliency", gray=True),
        View("hed_vgg16", PRETRAINED, THUMBNAIL, options=_options(block="block3", grid=4, size=64)),
        View("hed_vgg16_block4", PRETRAINED, THUMBNAIL, options=_options(block="block4", grid=4, size=64)),
        View("hog", COMPUTED, THUMBNAIL, compute=hog_features),
        View("tiny", COMPUTED, THUMBNAIL, compute=tiny_features),
        View("student", STUDENT, THUMBNAIL, options=_options(teachers=("hed_vgg16", "hog"), clusters=50)),
        View("mobilenet_coco", COMPUTED, THUMBNAIL, compute=mobilenet_features),
        View("mobilenet_coco_deep", COMPUTED, THUMBNAIL, compute=mobilenet_deep_features),
        View("mobilenet_coco_late", COMPUTED, THUMBNAIL, compute=mobilenet_late_features),
        View("nanodet_coco", COMPUTED, THUMBNAIL, compute=nanodet_features),
        View("movenet_pose", COMPUTED, THUMBNAIL, compute=movenet_features, scene_safe=False),
        View("movenet_pose_late", COMPUTED, THUMBNAIL, compute=movenet_late_features, scene_safe=False),
    )
}

# What train.py trains and encodes when --views is not given. Measured (BENCHMARKS.md, fusion): on
# product catalogs the autoencoder and the student rank below these and pull the fusion down, and
# they cost most of the ingestion; they stay selectable with --views. Beside HED's VGG16 come two
# COCO detectors' backbones, trained by other people on other data: MobileNetV3 (three blocks out of
# one pass, about 1 ms an image together; `mobilenet_coco_deep` is the strongest single view on every
# catalog we measured) and NanoDet's ShuffleNetV2 (`nanodet_coco`, about 4 ms). Differently trained
# networks err in different places, which is what the fusion and its clusters term feed on: with the
# last two added the default ranking went from 0.781 to 0.789 P@10 on the held-out catalog
# (BENCHMARKS.md, fusion_heldout). The tuning gives a view that adds nothing weight 0.
# The MoveNet pose views (`movenet_pose`, `movenet_pose_late`) raise clean and near-duplicate
# queries (Fashion-MNIST 10,000: 0.8387 -> 0.8416 P@10, 0.8176 -> 0.8215 mAP@100; near-duplicates
# 0.906 -> 0.929 mAP) but pull the catalog-guided crops of busy-scene queries off the product (0.5065
# -> 0.4705 P@10 when they took part in the crops' choice and ranking). So they are not scene-safe:
# the index's scene profile (simfusion.search.scene), which chooses and ranks a guided query's crops,
# leaves them out, and they serve the clean queries only.
DEFAULT_VIEWS = (
    "hed_vgg16",
    "hog",
    "tiny",
    "mobilenet_coco",
    "mobilenet_coco_deep",
    "mobilenet_coco_late",
    "nanodet_coco",
    "movenet_pose",
    "movenet_pose_late",
)
# views whose network comes from the model cache (simfusion.models.cache: `make models`)
CACHED_MODELS = {
    "mobilenet_coco": "centernet",
    "mobilenet_coco_deep": "centernet",
    "mobilenet_coco_late": "centernet",
    "nanodet_coco": "nanodet",
    "movenet_pose": "movenet-thunder",
    "movenet_pose_late": "movenet-thunder",
}


def scene_safe(name: str) -> bool:
    """Whether a view may choose and rank the crops of a query photographed in a busy scene (a view
    the registry does not know, a user's own autoencoder, is)."""
    view = VIEWS.get(name)
    return view is None or view.scene_safe


def default_views() -> tuple[str, ...]:
    """DEFAULT_VIEWS, less a view whose cached model is not fetched (logged, with how to fetch it):
    the pipeline still runs on a machine without npm, on the other views."""
    from simfusion.models.cache import ModelMissing, model_path

    out = []
    for name in DEFAULT_VIEWS:
        try:
            if name in CACHED_MODELS:
                model_path(CACHED_MODELS[name])
        except ModelMissing as exc:
            log.warning("default view %s left out: %s", name, exc)
            continue
        out.append(name)
    return tuple(out)


def view_spec(name: str) -> View:
    """The registered view of that name; an unknown name is an autoencoder over its own images."""
    return VIEWS.get(name) or View(name)


def check_view_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"a view name is letters, digits, '_' or '-', not {name!r}")
    return name


def view_channels(name: str, channels: int) -> int:
    """Channels a view's images are read with: 1 for gray maps, 3 for pretrained/computed/student
    views (their networks take RGB), else the thumbnail's `channels`."""
    spec = view_spec(name)
    if spec.kind != AUTOENCODER:
        return 3
    return 1 if spec.gray else channels


def image_view(name: str) -> str:
    """The view whose image files a view reads (a pretrained view reads the thumbnail)."""
    return view_spec(name).image
