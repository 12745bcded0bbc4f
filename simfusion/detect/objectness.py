"""The `objectness` detector: class-agnostic main-object localisation from pretrained models that
ship offline, and the `saliency` baseline.

HED edges (the bundled BSDS500 weights, `simfusion.models.hed`) and colour contrast with the image
border (the border's main colours, found by k-means, stand for the background) make an objectness
map on a copy shrunk to `OBJECTNESS_SIZE` px (HED itself sees a smaller copy, `HED_SIZE` px, whose
edges are stretched back: they only enter blurred, and this cuts HED's cost 4 to 10 times); the
main object is the strongest compact part of it (Otsu threshold, components weighted by how little
they touch the border), refined with GrabCut.
One box per image, label ``"object"``. ``objectness:split`` also splits a distinct object off a
busy scene it merged with (better on pasted-object benchmarks, worse on real photos, where it picks
out parts). OpenCV's static saliency, VGG feature contrast and box search were tried as further
cues and did not help (BENCHMARKS.md, section detection).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simfusion.detect.boxes import Detection, as_rgb, box_area, to_original
from simfusion.models.hed import edge_maps_unframed

OBJECTNESS_SIZE = 256  # long side of the copy the objectness map works on
# Long side of the copy HED works on, and its mirrored margin. Measured on the detection benchmark
# (seeds 0+1 / seed 2 / the catalog photos, mean IoU): HED at 256 px with a 16 px margin 0.735 /
# 0.773 / 0.934; at 96, 80 and 64 px with 8 px, 0.738-0.745 / 0.769-0.773 / 0.934; HED's cost falls
# with its pixels (256 px: 246 ms, 64 px: about 20 ms an image on 2 cores).
HED_SIZE = 64
HED_MARGIN = 8
MIN_WORK_SIDE = 32  # HED pools 4 times; smaller copies are stretched up to this
# GrabCut's rounds in `refine_box`. Detection benchmark (seeds 0+1 / seed 2 / catalog photos, mean
# IoU): 1 round 0.740 / 0.762 / 0.950, 2 rounds 0.746 / 0.776 / 0.941, 3 rounds 0.745 / 0.773 /
# 0.934; each round costs about 4 ms on a product shot and 40-50 ms on a 256 px photo.
GRABCUT_ITERATIONS = 2


def working_copy(image: np.ndarray, *, size: int = OBJECTNESS_SIZE) -> np.ndarray:
    """`image` shrunk so its long side is `size` (never enlarged, except sides below MIN_WORK_SIDE)."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, size / max(height, width))
    new_h = max(MIN_WORK_SIDE, round(height * scale))
    new_w = max(MIN_WORK_SIDE, round(width * scale))
    if (new_h, new_w) == (height, width):
        return image
    shrinking = new_h <= height and new_w <= width
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def border_mask(height: int, width: int, *, frac: float = 0.04) -> np.ndarray:
    """True on a frame `frac` of the short side wide (at least one pixel)."""
    band = max(1, round(frac * min(height, width)))
    mask = np.zeros((height, width), bool)
    mask[:band] = mask[-band:] = True
    mask[:, :band] = mask[:, -band:] = True
    return mask


def _kmeans(points: np.ndarray, k: int, *, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (centres start spread along the main axis): centres and labels."""
    points = points.astype(np.float32)
    k = max(1, min(k, len(points)))
    centred = points - points.mean(axis=0)
    sample = centred[:: max(1, len(points) // 2000)]
    axis = np.linalg.svd(sample, full_matrices=False)[2][0] if len(sample) > 1 else np.ones(points.shape[1])
    order = np.argsort(centred @ axis)
    centres = points[order[np.linspace(0, len(points) - 1, k).astype(int)]].copy()
    planes = np.ascontiguousarray(points.T)
    labels = None
    for _ in range(iterations):
        fresh = _squared_distances(planes, centres).argmin(0)
        if labels is not None and np.array_equal(fresh, labels):
            return centres, labels  # converged: further rounds would change nothing
        labels = fresh
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return centres, _squared_distances(planes, centres).argmin(0)


def _squared_distances(planes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distances (k, N) of points given as coordinate planes (D, N) to centres (k, D): the
    same sums, in the same order, as broadcasting (N, k, D), at a tenth of its cost for D = 3."""
    out = np.empty((len(centres), planes.shape[1]), planes.dtype)
    for j, centre in enumerate(centres):
        np.square(planes[0] - centre[0], out=out[j])
        for d in range(1, len(planes)):
            out[j] += np.square(planes[d] - centre[d])
    return out


def border_contrast(image: np.ndarray, *, clusters: int = 8, cover: float = 0.8) -> np.ndarray:
    """Lab colour distance of each pixel to the image border's main colours, float32 (H, W).

    The border's colours are clustered; only the biggest clusters that together cover `cover` of
    the border count as background, so an object that touches the border (a product photo that
    fills the frame) does not make its own colours background.
    """
    import cv2

    height, width = image.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    border = lab[border_mask(height, width)]
    centres, labels = _kmeans(border, clusters)
    share = np.bincount(labels, minlength=len(centres)) / len(border)
    order = np.argsort(-share)
    keep = order[: int(np.searchsorted(np.cumsum(share[order]), cover - 1e-9)) + 1]
    squared = _squared_distances(np.ascontiguousarray(lab.reshape(-1, 3).T), centres[keep])
    return np.sqrt(squared.min(axis=0)).reshape(height, width)


def edge_excess(edges: np.ndarray, *, sigma: float = 0.015) -> np.ndarray:
    """Local HED edge density above what the border shows (its 95th percentile), float32 (H, W)."""
    import cv2

    height, width = edges.shape
    density = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma * max(height, width))
    return np.maximum(0.0, density - np.percentile(density[border_mask(height, width)], 95))


def objectness_map(
    image: np.ndarray,
    edges: np.ndarray,
    *,
    contrast_floor: float = 20.0,
    edge_weight: float = 0.6,
    edge_gate: float = 0.03,
    smooth: float = 0.015,
) -> np.ndarray:
    """Objectness of each pixel from border colour contrast and HED edges, smoothed, float32 (H, W).

    Contrast is in units of max(its 99.5th percentile, `contrast_floor` Lab units), so a plain
    image with nothing on it stays near 0. Edges count only where the border itself has few
    (a studio backdrop: weight ~`edge_weight`); on textures and busy scenes they mostly mark
    background, so their weight falls as exp(-(mean border edge / `edge_gate`)^2).
    """
    import cv2

    height, width = edges.shape
    contrast = border_contrast(image)
    raw = contrast / max(float(np.percentile(contrast, 99.5)), contrast_floor)
    gate = float(np.exp(-((edges[border_mask(height, width)].mean() / edge_gate) ** 2)))
    if gate > 1e-3:
        raw = raw + gate * edge_weight * edge_excess(edges) / 0.2
    return cv2.GaussianBlur(raw.astype(np.float32), (0, 0), smooth * max(height, width))


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, 1), np.percentile(values, 99.5)
    return np.clip((values - low) / (high - low + 1e-6), 0, 1)


def select_object(
    objectness: np.ndarray, *, close: float = 0.05, keep_ratio: float = 0.3, border_sigma: float = 1.0
) -> tuple[np.ndarray, float]:
    """The main object's pixels in an objectness map: (mask bool (H, W), Otsu level in [0, 255]).

    Otsu threshold, a closing, then the components with the most objectness mass; a component
    that runs along the image border (the boundary connectivity of Zhu et al. 2014) counts less.
    """
    import cv2

    height, width = objectness.shape
    levels = (_stretch(objectness) * 255).astype(np.uint8)
    otsu, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (levels > otsu).astype(np.uint8)
    size = max(3, int(close * max(height, width)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count <= 1:
        return np.ones((height, width), bool), float(otsu)
    mass = np.bincount(labels.ravel(), weights=levels.ravel().astype(np.float64), minlength=count)
    band = max(1, round(0.02 * min(height, width)))
    on_border = np.bincount(labels[border_mask(height, width, frac=0.02)], minlength=count)
    connectivity = on_border / band / np.sqrt(np.maximum(stats[:, 4], 1))
    weight = mass * np.exp(-(connectivity**2) / (2 * border_sigma**2))
    weight[0] = 0
    keep = np.nonzero(weight >= keep_ratio * weight.max())[0]
    return np.isin(labels, keep), float(otsu)


def refine_box(
    image: np.ndarray,
    objectness: np.ndarray,
    seed: np.ndarray,
    otsu: float,
    *,
    expand: float = 0.2,
    context: float = 0.5,
) -> list[int]:
    """Box around GrabCut's foreground, started from the seed mask inside its box grown by `expand`.

    GrabCut runs on a crop `context` times the box's size around it (the background it learns
    from is the part of that crop outside the grown box), which keeps it fast on small objects.
    """
    import cv2

    height, width = seed.shape
    ys, xs = np.nonzero(seed)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def grow(share: float) -> tuple[int, int, int, int]:
        dx, dy = (x1 - x0) * share, (y1 - y0) * share
        return int(max(0, x0 - dx)), int(max(0, y0 - dy)), int(min(width, x1 + dx)), int(min(height, y1 + dy))

    left, top, right, bottom = grow(expand)
    cl, ct, cr, cb = grow(expand + context)
    levels = _stretch(objectness)[ct:cb, cl:cr] * 255
    inner = seed[ct:cb, cl:cr]
    mask = np.full(levels.shape, cv2.GC_BGD, np.uint8)
    inside = np.zeros(levels.shape, bool)
    inside[top - ct : bottom - ct, left - cl : right - cl] = True
    mask[inside] = cv2.GC_PR_BGD
    mask[inside & (levels > otsu * 0.5)] = cv2.GC_PR_FGD
    mask[inner & (levels > otsu)] = cv2.GC_PR_FGD
    # GrabCut needs both colour models; a seed that fills the image has no background to learn
    if (mask == cv2.GC_PR_FGD).sum() < 4 or (mask == cv2.GC_BGD).sum() < 16:
        return [x0, y0, x1, y1]
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    crop = np.ascontiguousarray(image[ct:cb, cl:cr])
    cv2.grabCut(crop, mask, None, background, foreground, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    found = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(found)
    if count <= 1:
        return [x0, y0, x1, y1]
    overlap = np.bincount(labels[inner], minlength=count)
    overlap[0] = 0
    keep = np.nonzero((overlap > 0) & (stats[:, 4] >= 0.02 * stats[1:, 4].max()))[0]
    if len(keep) == 0:
        return [x0, y0, x1, y1]
    ys, xs = np.nonzero(np.isin(labels, keep))
    return [int(xs.min()) + cl, int(ys.min()) + ct, int(xs.max()) + 1 + cl, int(ys.max()) + 1 + ct]


def box_score(objectness: np.ndarray, box: Sequence[int], *, ring: float = 0.25) -> float:
    """Confidence in [0, 1]: how much the box stands out from a ring around it, times its strength.

    `objectness` is in contrast units (1 = a clear object); the relative centre-surround contrast
    says the box is distinct, the mean inside says there is something there at all.
    """
    height, width = objectness.shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    outer = objectness[
        max(0, int(y0 - ring * bh)) : min(height, int(y1 + ring * bh)),
        max(0, int(x0 - ring * bw)) : min(width, int(x1 + ring * bw)),
    ]
    inside_sum = float(objectness[y0:y1, x0:x1].sum())
    inside = inside_sum / max(1, bw * bh)
    ring_area = outer.size - bw * bh
    around = (float(outer.sum()) - inside_sum) / ring_area if ring_area > 0 else 0.0
    distinct = (inside - around) / inside if inside > 1e-6 else 0.0
    return float(np.clip(distinct, 0, 1) * np.clip(inside / 0.5, 0, 1))


def object_candidates(
    objectness: np.ndarray,
    otsu: float,
    *,
    levels: Sequence[float] = (1.25, 1.5, 2.0, 2.5),
    min_area: float = 0.002,
) -> list[np.ndarray]:
    """Masks of the components above `levels` times the Otsu level: the cores of the map's peaks,
    which split an object from a neighbour that the Otsu level merged it with."""
    import cv2

    stretched = (_stretch(objectness) * 255).astype(np.uint8)
    out = []
    for level in levels:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (stretched > min(250, otsu * level)).astype(np.uint8)
        )
        out.extend(labels == j for j in range(1, count) if stats[j, 4] >= min_area * objectness.size)
    return out


def mask_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def locate_object(
    image: np.ndarray, edges: np.ndarray, *, split_gain: float | None = None, split_area: float = 0.06
) -> tuple[list[int], float]:
    """The main object's box [x0, y0, x1, y1] in `image`'s pixels and its score, from HED `edges`.

    The Otsu selection refined by GrabCut. With `split_gain`, a peak core of the map
    (`object_candidates`, at least `split_area` of that box) that scores `split_gain` times
    better replaces it: this splits an object from a busy scene it was merged with, but on real
    photos it also picks out distinct parts (an eye, a petrol tank), so it is off by default.
    """
    smooth = objectness_map(image, edges)
    seed, otsu = select_object(smooth)
    box = refine_box(image, smooth, seed, otsu)
    if split_gain is None:
        return box, box_score(smooth, box)
    best, best_mask = box_score(smooth, box) * split_gain, None
    for mask in object_candidates(smooth, otsu):
        core = mask_box(mask)
        if box_area(core) < split_area * box_area(box):
            continue
        score = box_score(smooth, core)
        if score > best:
            best, best_mask = score, mask
    if best_mask is not None:
        box = refine_box(image, smooth, best_mask, otsu)
    return box, box_score(smooth, box)


def detect_objectness(
    images: Sequence[np.ndarray],
    *,
    size: int = OBJECTNESS_SIZE,
    batch_size: int = 16,
    split_gain: float | None = None,
) -> list[list[Detection]]:
    """The `objectness` detector: one main-object box per image, label "object"."""

    import cv2

    smalls = [working_copy(as_rgb(image), size=size) for image in images]
    edges_all = edge_maps_unframed(
        [working_copy(small, size=HED_SIZE) for small in smalls], margin=HED_MARGIN, batch_size=batch_size
    )
    out = []
    for image, small, edges in zip(images, smalls, edges_all, strict=True):
        if edges.shape != small.shape[:2]:
            # stretched edges are as many times thicker as the copy was smaller: scale them back so
            # the edge density (and the box's score) stays what HED at full size gives
            thinner = edges.shape[1] / small.shape[1]
            size = (small.shape[1], small.shape[0])
            edges = thinner * cv2.resize(edges, size, interpolation=cv2.INTER_LINEAR)
        box, score = locate_object(small, edges, split_gain=split_gain)
        out.append([{"box": to_original(box, small.shape, image.shape), "score": score, "label": "object"}])
    return out


def detect_saliency(images: Sequence[np.ndarray], *, size: int = OBJECTNESS_SIZE) -> list[list[Detection]]:
    """The `saliency` baseline: spectral-residual saliency, Otsu, the component with most mass."""
    import cv2

    out = []
    for image in images:
        small = working_copy(as_rgb(image), size=size)
        ok, saliency = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(small)
        saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), 0.02 * max(small.shape[:2]))
        levels = (_stretch(saliency) * 255).astype(np.uint8)
        otsu, mask = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        if count > 1:
            mass = np.bincount(labels.ravel(), weights=levels.ravel().astype(np.float64), minlength=count)
            mass[0] = 0
            x, y, w, h = stats[int(mass.argmax()), :4]
            box = [int(x), int(y), int(x + w), int(y + h)]
        else:
            box = [0, 0, small.shape[1], small.shape[0]]
        score = box_score(saliency / max(float(saliency.max()), 1e-6), box)
        out.append([{"box": to_original(box, small.shape, image.shape), "score": score, "label": "object"}])
    return out
