"""Catalog-guided crops: how a query the detector is unsure of (a product photographed in a busy
scene) is answered from the crop of it that fits the catalog best (simfusion.search.crops holds the
pure parts), chosen and ranked with the index's scene profile (simfusion.search.scene).

`GuidedCrops` is a part of `simfusion.search.catalog.Catalog`, kept apart; it reads the catalog's
index, pipeline and vectors. Its steps are public so a benchmark can call them: `crop_maps` encodes
one image's candidate crops, `choose_crop` picks one, `refine_crop` nudges the pick (both score
crops with `crop_fits`); `pick_crop` is the two together, as `guide` uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.detect.objectness import working_copy
from simfusion.pipeline import encode_images
from simfusion.search.crops import (
    DETECTOR,
    FIT_SHARE,
    FIT_TOP,
    GUIDE_SIDE,
    GUIDED_SHARE,
    IMAGE,
    NUDGED_FROM,
    REFINE,
    WINDOW,
    best_crop,
    box_between,
    crop_fit,
    crop_kind,
    is_unsure,
    nudged_boxes,
    window_boxes,
)
from simfusion.search.index import CatalogIndex, search
from simfusion.search.options import SearchOptions
from simfusion.search.scene import CLEAN, PROFILES, SCENE

log = logging.getLogger(__name__)


def profile_of(record: Mapping[str, Any]) -> str:
    """The index profile a query is ranked with (simfusion.search.scene): the scene profile for one
    answered from a window of its image (its record has a `query_box`, and a `query_crop` of
    "window"), the index's own views and weights for the others: a query whose best fit was its
    detector's box or its whole image is a clean shot of the product."""
    if "query_box" not in record:
        return CLEAN
    return SCENE if record.get("query_crop", WINDOW) == WINDOW else CLEAN


def search_as_answered(
    index: CatalogIndex,
    queries: Mapping[str, np.ndarray],
    records: Sequence[Mapping[str, Any]],
    *,
    shares: Sequence[float],
    **options: Any,
) -> list[list[dict[str, Any]]]:
    """`index.search` of each query (a row of `queries`, whose record is `records[row]`) with the
    profile it is answered with (`profile_of`) and its clusters share (`shares[row]`); `options` are
    search's others."""
    out: list[list[dict[str, Any]]] = [[] for _ in records]
    for profile in PROFILES:
        mine = [row for row, record in enumerate(records) if profile_of(record) == profile]
        if not mine:
            continue
        picked = {view: np.asarray(vectors)[mine] for view, vectors in queries.items()}
        found = search(
            index, picked, clusters_share=[shares[row] for row in mine], profile=profile, **options
        )
        for row, hits in zip(mine, found, strict=True):
            out[row] = hits
    return out


class GuidedCrops:
    """The guided-crop part of a Catalog (which gives it `index`, `path`, `pipeline`, `vectors`)."""

    def guide(
        self,
        records: Sequence[dict[str, Any]],
        images: Sequence[np.ndarray],
        maps: Mapping[str, np.ndarray],
        found: Sequence[Mapping[str, Any]],
        opts: SearchOptions,
    ) -> list[list[int] | None]:
        """Catalog-guided crops (simfusion.search.crops): each unsure query's rows of `maps` become
        those of its best-fitting crop, and its record gets that crop as `query_box` and what it is as
        `query_crop` (crops.crop_kind). Returns each query's chosen box (None: not guided). The crops
        are chosen with the index's scene profile (simfusion.search.scene) unless `opts.views` names
        the views; a query answered from its whole image gets the other views' maps of it too."""
        views = list(opts.views or self.index.scene_views)
        chosen: list[list[int] | None] = [None] * len(images)
        for row, (image, result) in enumerate(zip(images, found, strict=True)):
            if not is_unsure(result):
                continue
            # a large query's crops come from a shrunk copy; boxes on it map back to the query's pixels
            work = image if max(image.shape[:2]) <= GUIDE_SIDE else working_copy(image, size=GUIDE_SIDE)
            detected = {**result, "box": box_between(result["box"], image.shape, work.shape)}
            boxes, crop_maps = self.crop_maps(work, detected, {view: maps[view][row] for view in views})
            box, best_maps = self.pick_crop(work, boxes, crop_maps, views=views, weights=opts.weights)
            kind = crop_kind(boxes, box)
            rest = [view for view in maps if view not in views]  # the detector's box's maps so far
            if kind == IMAGE and rest:
                best_maps.update({v: m[0] for v, m in self.encode_crops(work, [box], views=rest).items()})
            box = list(result["box"]) if kind == DETECTOR else box_between(box, work.shape, image.shape)
            for view in best_maps:
                maps[view][row] = best_maps[view]
            chosen[row] = records[row]["query_box"] = box
            records[row]["query_crop"] = kind
            name = records[row].get("id") or records[row].get("image") or row + 1
            log.info("query %s: detection unsure; answered from crop %s of %d", name, box, len(boxes))
        return chosen

    def crop_maps(
        self, image: np.ndarray, found: Mapping[str, Any], own: Mapping[str, np.ndarray]
    ) -> tuple[list[list[int]], dict[str, np.ndarray]]:
        """The candidate crops of one query image: the detector's box (whose maps per view, `own`,
        are already encoded) and then the windows; returns (boxes, each view's maps, a row a crop)."""
        windows = window_boxes(*image.shape[:2])
        encoded = self.encode_crops(image, windows, views=list(own))
        boxes = [list(found["box"]), *windows]
        return boxes, {view: np.concatenate([own[view][None], encoded[view]]) for view in own}

    def choose_crop(
        self,
        crop_maps: Mapping[str, np.ndarray],
        *,
        views: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> int:
        """The row of `crop_maps` (the detector's box first) whose best catalog matches fit best,
        searched with `views` and `weights` as the query itself will be."""
        return best_crop(self.crop_fits(crop_maps, views=views, weights=weights))

    def pick_crop(
        self,
        image: np.ndarray,
        boxes: Sequence[Sequence[int]],
        crop_maps: Mapping[str, np.ndarray],
        *,
        views: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> tuple[list[int], dict[str, np.ndarray]]:
        """The (box, maps per view) a guided query is answered from: the best fit of `boxes` (rows of
        `crop_maps`, the detector's box first), then, if it is a window, nudged (`refine_crop`)."""
        views = list(views or self.index.scene_views)
        fits = self.crop_fits(crop_maps, views=views, weights=weights)
        best = best_crop(fits)
        box, maps = list(boxes[best]), {view: crop_maps[view][best] for view in views}
        if best >= NUDGED_FROM:  # a window; the detector's box and the whole image are kept as they are
            box, maps = self.refine_crop(image, box, maps, fit=fits[best], weights=weights)
        return box, maps

    def refine_crop(
        self,
        image: np.ndarray,
        box: Sequence[int],
        maps: Mapping[str, np.ndarray],
        *,
        fit: float | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> tuple[list[int], dict[str, np.ndarray]]:
        """The chosen crop `box` (its maps per view: `maps`, which name the views searched; its `fit`,
        found here if not given) nudged, step by step (crops.REFINE), to whichever shifted or
        rescaled box fits the catalog better."""
        views = list(maps)
        box, maps = list(box), dict(maps)
        if fit is None:
            fit = self.crop_fits({view: maps[view][None] for view in views}, views=views, weights=weights)[0]
        for shift, scales in REFINE:
            boxes = nudged_boxes(box, *image.shape[:2], shift=shift, scales=scales)
            encoded = self.encode_crops(image, boxes, views=views)
            fits = self.crop_fits(encoded, views=views, weights=weights)
            best = int(np.argmax(fits))
            if fits[best] > fit:
                box, fit, maps = boxes[best], fits[best], {view: encoded[view][best] for view in views}
        return box, maps

    def encode_crops(
        self, image: np.ndarray, boxes: Sequence[Sequence[int]], *, views: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Each view's maps of `boxes` of one image, a row a box, encoded like the catalog."""
        crops, path = [image] * len(boxes), self.path
        return encode_images(
            crops, model_save_path=path, views=list(views), pipeline=self.pipeline, boxes=boxes
        )[0]

    def crop_fits(
        self,
        crop_maps: Mapping[str, np.ndarray],
        *,
        views: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Each crop's fit to the catalog (crops.crop_fit), a row of `crop_maps` a crop, scored with the
        index's scene profile (its views unless `views` names others)."""
        views = list(views or self.index.scene_views)
        vectors = self.vectors({view: crop_maps[view] for view in views})
        hits = search(
            self.index,
            vectors,
            k=FIT_TOP,
            views=views,
            weights=weights,
            clusters_share=FIT_SHARE,
            profile=SCENE,
        )
        return crop_fit(hits)

    def share_of(self, record: Mapping[str, Any]) -> float:
        """The clusters term's share a query is ranked with: `GUIDED_SHARE` for one answered from
        a catalog-guided crop (its record has a `query_box`), the index's own for the others."""
        if not self.index.clusters_share:
            return 0.0
        return GUIDED_SHARE if "query_box" in record else self.index.clusters_share

    profile_of = staticmethod(profile_of)  # the module's function, for a catalog's callers
