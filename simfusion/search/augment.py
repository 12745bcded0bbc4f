"""Seeded augmented copies of catalog images: what a query photo of a catalog item may look like.

Crop, flip, small rotation, colour jitter, JPEG, rescale, and pasting onto a background (another
catalog image, so no outside picture is needed). Used by the unsupervised fusion tuning
(simfusion.search.tune); uint8 RGB arrays in and out, OpenCV underneath.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

AUGMENTATIONS = ("crop", "flip", "rotate", "jitter", "jpeg", "rescale", "paste", "combo")


def crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop keeping 70-90% of each side."""
    h, w = image.shape[:2]
    share = rng.uniform(0.7, 0.9)
    ch, cw = max(1, int(h * share)), max(1, int(w * share))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return np.ascontiguousarray(image[y : y + ch, x : x + cw])


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def rotate(
    image: np.ndarray, rng: np.random.Generator, *, low: float = 5.0, high: float = 15.0
) -> np.ndarray:
    """A rotation of low-high degrees either way, the border reflected."""
    import cv2

    h, w = image.shape[:2]
    angle = rng.uniform(low, high) * rng.choice((-1, 1))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)


def jitter(image: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0) -> np.ndarray:
    """Brightness and contrast +-25%, saturation +-40%, hue +-12 degrees (times `strength`)."""
    import cv2

    array = image.astype(np.float32)
    array = (array - array.mean()) * (1 + strength * rng.uniform(-0.25, 0.25)) + array.mean()
    array = array * (1 + strength * rng.uniform(-0.25, 0.25))
    hsv = cv2.cvtColor(np.clip(array, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + strength * rng.uniform(-6, 6)) % 180  # OpenCV hue is degrees / 2
    hsv[..., 1] *= 1 + strength * rng.uniform(-0.4, 0.4)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def jpeg(image: np.ndarray, rng: np.random.Generator, *, quality: int = 25) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def rescale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to 40-70% and back: a smaller, blurrier photo of the same thing."""
    import cv2

    h, w = image.shape[:2]
    share = rng.uniform(0.4, 0.7)
    small = cv2.resize(image, (max(1, int(w * share)), max(1, int(h * share))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def paste(image: np.ndarray, rng: np.random.Generator, *, background: np.ndarray) -> np.ndarray:
    """The image at 45-65% of the side, at a random place, on `background` (resized to the image's size)."""
    import cv2

    h, w = image.shape[:2]
    out = cv2.resize(np.ascontiguousarray(background), (w, h), interpolation=cv2.INTER_LINEAR).copy()
    share = rng.uniform(0.45, 0.65)
    ph, pw = max(1, int(h * share)), max(1, int(w * share))
    small = cv2.resize(image, (pw, ph), interpolation=cv2.INTER_AREA)
    y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    out[y : y + ph, x : x + pw] = small
    return out


def combo(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop, flip, a milder rotation and jitter, JPEG 50."""
    image = flip(crop(image, rng), rng)
    image = rotate(image, rng, low=3.0, high=8.0)
    return jpeg(jitter(image, rng, strength=0.5), rng, quality=50)


def augment(
    image: np.ndarray, kind: str, rng: np.random.Generator, *, background: np.ndarray | None = None
) -> np.ndarray:
    """One augmented copy of a uint8 RGB image; `paste` needs a background."""
    simple: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
        "crop": crop,
        "flip": flip,
        "rotate": rotate,
        "jitter": jitter,
        "jpeg": jpeg,
        "rescale": rescale,
        "combo": combo,
    }
    if kind == "paste":
        if background is None:
            raise ValueError("paste needs a background image")
        return paste(image, rng, background=background)
    if kind not in simple:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, not {kind!r}")
    return simple[kind](np.ascontiguousarray(image), rng)


def augmented_copies(
    images: Sequence[np.ndarray], *, copies: int = 2, seed: int = 0, kinds: Sequence[str] = AUGMENTATIONS
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """`copies` augmented copies of each image, kinds drawn in turn from a seeded shuffle; a pasted
    copy lands on another image of the list. Returns (copies, source row of each, kind of each)."""
    rng = np.random.default_rng(seed)
    out, sources, used = [], [], []
    order = list(kinds)
    for row, image in enumerate(images):
        for _ in range(copies):
            if not used or len(used) % len(order) == 0:
                rng.shuffle(order)
            kind = order[len(used) % len(order)]
            other = images[(row + 1 + int(rng.integers(0, max(1, len(images) - 1)))) % len(images)]
            out.append(augment(image, kind, rng, background=other))
            sources.append(row)
            used.append(kind)
    return out, np.asarray(sources, dtype=np.int64), used
