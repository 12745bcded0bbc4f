"""Catalog-guided crops: a query the detector is unsure about is searched with many crops, and the
crop that looks most like the catalog wins.

A product photographed inside a busy scene (a phone photo of a shoe on a sofa) is where the
class-agnostic detector fails most: it boxes the scene's own subject, and the query is then
encoded from the wrong pixels. When the detector's score is below `UNSURE_SCORE`, the query is
also cut into the whole image and square windows at `WINDOW_SCALES` of its short side (a third
of a window apart, `WINDOW_STEP`); every crop is encoded like the catalog and searched, and the
crop whose `FIT_TOP` best catalog matches are the most similar on average (the detector's box
ahead by `DETECTOR_PRIOR`) is the one the query is answered from; a window so chosen is then nudged
(`REFINE`: shifted and rescaled a little, twice) while a nudge fits better. A catalog of clean product shots
thus picks the window holding the product. Chosen on the scene-query benchmark's queries and on 150
held-out catalog items as queries (threshold 0.5 / 0.7 / always, prior 0 to 0.04): P@10 0.18
with the detector's box, 0.33 guided, while the clean queries moved from 0.790 to 0.787. Comparing
the crops on the computed views only (no pretrained CNN over every crop) cut a guided query's time
by about 40% but lost 0.02 P@10 (0.331 -> 0.313), so every view compares them. Windows two thirds
of a window apart instead of half (about half as many crops) lost more: 0.332 -> 0.272 with the
five default views, for 20% less encoding time; a third apart instead of half (about twice as many
crops) gained 0.055 with the seven (0.3825 -> 0.4370), and a fit over 20 matches instead of 5
another 0.048 (-> 0.4845).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

UNSURE_SCORE = 0.7  # detections scoring below this get the guided search
WINDOW_SCALES = (0.35, 0.5, 0.7)  # window sides, as shares of the image's short side
# Windows this share of their side apart. Scene queries (bench_scene_queries.py, seed 0, 200
# queries): 1/2 (27 crops of a 320 px photo) P@10 0.3825, 1/3 (57 crops) 0.4370; five scales half a
# window apart (56 crops) 0.4245. Clean queries the detector is unsure of were not hurt (300 of
# them: 0.8020 -> 0.8033); a guided query costs about 1.5 times as long.
WINDOW_STEP = 1 / 3
# A square 320 px photo has 36, 16 and 4 windows at the three scales, a 16:9 one 78 and a 2:1 one 90 at
# the first: photos keep them all; a long thin image's windows spread further apart instead.
MAX_WINDOWS_PER_SCALE = 96
# A crop's fit: the mean fused similarity of its best FIT_TOP catalog matches. Scene queries (seed
# 0, 200 queries, windows a third apart): 3 matches P@10 0.416, 5 0.437, 10 0.461, 20 0.485, 40
# 0.491; seed 1, 600 queries: 5 0.436, 20 0.471. Clean unsure queries: 0.8033 (5), 0.8047 (20).
# More matches reward a crop that looks like a whole kind of catalog item, not like one item.
FIT_TOP = 20
# The clusters term's share of a crop's fit, and of a guided query's ranking (every other query is
# ranked with the index's own, 0.5). The term is fitted on clean catalog shots; a window of a busy
# scene can project strongly onto one of its kinds, so here it gets less say. Scene queries, P@10
# (bench_scene_queries.py, the crops encoded once; fit share / ranking share):
#   Fashion-MNIST, seed 0 (200): 0.5 / 0.5 0.484, 0.2 / 0.1 0.497; seed 1 (300): 0.437, 0.438
#   scikit-learn digits, seed 0 (200): 0.432, 0.652; seed 1 (300): 0.463, 0.666
# Fit shares 0 to 0.3 all beat 0.5 on digits; 0.2 is the best on Fashion-MNIST. Clean Fashion-MNIST
# shots the detector is unsure of (108 of 300) lose 0.013 (0.824 -> 0.811): -0.004 over all 300.
FIT_SHARE = 0.2
GUIDED_SHARE = 0.1
# The chosen crop is then nudged, step by step: (shift, as a share of its side; rescalings about its
# centre). Each step tries the 8 shifted boxes and the rescaled ones and keeps the best fit, if
# better. Scene queries, P@10 (seed 0, 200 queries; research script, the same crops otherwise):
#   Fashion-MNIST 0.4985 (no nudge), 0.5045 (the first step), 0.5075 (both)
#   scikit-learn digits 0.650, 0.723, 0.735 (raw pixels of the true box: 0.719)
# Through bench_scene_queries.py (windows only, NUDGED_FROM): Fashion-MNIST 0.5065, digits 0.7325.
# A guided query encodes 20 crops more (57 windows before); clean shots the detector is unsure of
# lost 0.007 with every crop nudged (0.811 -> 0.804).
REFINE = ((1 / 6, (0.83, 1.2)), (1 / 12, (0.9, 1.1)))
# Only a window is nudged (crops from row NUDGED_FROM on): the detector's box (row 0) and the whole
# image (row 1) are kept as they are. Nudging those too cost the near-duplicate benchmark 0.031 mAP
# (0.909 -> 0.878, three seeds): a near-duplicate of a catalog photo is best answered whole.
NUDGED_FROM = 2
DETECTOR_PRIOR = 0.01  # a window must fit this much better than the detector's own box to win
# A query larger than this a side has its crops cut from a copy shrunk to it: the smallest window
# (0.35 of the short side) of a 4:3 copy is still 268 px, twice a 128 px thumbnail, and a 12 MP
# phone photo's guided query took 3.0 s instead of 1.9 s for the same photo at 800 px, most of it
# resizing its 600 crops from the full-size image.
GUIDE_SIDE = 1024
CROPS = ("guided", "detector")  # guided: the search above for unsure queries; detector: its box only


DETECTOR, IMAGE, WINDOW = "detector", "image", "window"  # what a guided query was answered from


def crop_kind(boxes: Sequence[Sequence[int]], box: Sequence[int]) -> str:
    """What the chosen `box` is among a query's candidate `boxes` (the detector's box, then the whole
    image, then the windows): DETECTOR, IMAGE or WINDOW (a nudged window is a window too)."""
    for kind, candidate in zip((DETECTOR, IMAGE), boxes[:NUDGED_FROM], strict=False):
        if list(box) == list(candidate):
            return kind
    return WINDOW


def window_boxes(height: int, width: int, *, scales: Sequence[float] = WINDOW_SCALES) -> list[list[int]]:
    """The whole image, then square windows of each scale, `WINDOW_STEP` of a window apart:
    [x0, y0, x1, y1]. Along a long thin image's long side they spread further apart, so that no
    scale has more than `MAX_WINDOWS_PER_SCALE` (windows follow the short side: a 30 x 2,900 px
    image would otherwise be cut into 9,885)."""
    out = [[0, 0, int(width), int(height)]]
    short = min(height, width)
    for scale in scales:
        side = int(scale * short)
        if side < 8:
            continue
        step = max(1, round(side * WINDOW_STEP))
        rows, cols = _capped(*(len(range(0, length - side + 1, step)) for length in (height, width)))
        for y in _starts(height, side, step, rows):
            for x in _starts(width, side, step, cols):
                out.append([x, y, x + side, y + side])
    return out


def _capped(rows: int, cols: int, cap: int | None = None) -> tuple[int, int]:
    """Window rows and columns of one scale, at most `cap` (MAX_WINDOWS_PER_SCALE) together: fewer
    along the side that has more, not below the other side's count; then fewer along both."""
    cap = cap or MAX_WINDOWS_PER_SCALE
    if rows * cols <= cap:
        return rows, cols
    small = min(rows, cols)
    big = max(small, cap // small)
    if big * small > cap:  # many windows both ways (a tiny scale): a square grid
        big = small = math.isqrt(cap)
    return (big, small) if rows >= cols else (small, big)


def _starts(length: int, side: int, step: int, count: int) -> list[int]:
    """`count` window starts along a side of `length`: `step` apart, or spread evenly from one end
    to the other where fewer than that spacing gives."""
    natural = list(range(0, length - side + 1, step))
    if count >= len(natural):
        return natural
    return [int(v) for v in np.linspace(0, length - side, count).round()]


def is_unsure(found: Mapping[str, Any], *, threshold: float = UNSURE_SCORE) -> bool:
    """Whether a query's detection result ({detections, box}; {} when no detector ran) is unsure."""
    detections = found.get("detections")
    if not found or detections is None:
        return False
    return not detections or max(float(d.get("score", 0.0)) for d in detections) < threshold


def best_crop(fits: np.ndarray, *, prior: float = DETECTOR_PRIOR) -> int:
    """The crop to answer from, of fits whose first is the detector's box (which wins by `prior`)."""
    fits = np.asarray(fits, np.float64).copy()
    fits[1:] -= prior
    return int(np.argmax(fits))


def crop_fit(hits_per_crop: Sequence[Sequence[Mapping[str, Any]]], *, top: int = FIT_TOP) -> np.ndarray:
    """Each crop's fit to the catalog: the mean score of its best `top` hits (hits come best first)."""
    return np.array(
        [np.mean([float(h["score"]) for h in hits[:top]]) if hits else -np.inf for hits in hits_per_crop]
    )


def nudged_boxes(
    box: Sequence[int], height: int, width: int, *, shift: float, scales: Sequence[float]
) -> list[list[int]]:
    """`box` [x0, y0, x1, y1] moved by `shift` of its side in the 8 directions, then rescaled by
    each of `scales` about its centre; clipped to the image, boxes under 8 px left out."""
    x0, y0, x1, y1 = (int(v) for v in box)
    step = max(1, round(max(x1 - x0, y1 - y0) * shift))
    moved = [[x0 + dx, y0 + dy, x1 + dx, y1 + dy] for dy in (-step, 0, step) for dx in (-step, 0, step)]
    del moved[4]  # the box itself
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    moved += [
        [round(cx - hw * s), round(cy - hh * s), round(cx + hw * s), round(cy + hh * s)] for s in scales
    ]
    out = []
    for bx0, by0, bx1, by1 in moved:
        clipped = [max(0, bx0), max(0, by0), min(int(width), bx1), min(int(height), by1)]
        if clipped[2] - clipped[0] >= 8 and clipped[3] - clipped[1] >= 8:
            out.append(clipped)
    return out


def box_between(box: Sequence[int], source: Sequence[int], target: Sequence[int]) -> list[int]:
    """`box` (x0, y0, x1, y1) on an image of shape `source` mapped onto one of shape `target` (the
    same picture at another size): rounded outwards, clipped to the target."""
    sx, sy = target[1] / source[1], target[0] / source[0]
    x0, y0, x1, y1 = box
    return [
        max(0, math.floor(x0 * sx + 1e-6)),
        max(0, math.floor(y0 * sy + 1e-6)),
        min(int(target[1]), math.ceil(x1 * sx - 1e-6)),
        min(int(target[0]), math.ceil(y1 * sy - 1e-6)),
    ]
