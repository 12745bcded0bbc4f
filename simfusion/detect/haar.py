"""The `haar` detector: OpenCV's bundled Haar cascades, with labels."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from simfusion.detect.boxes import Detection, DetectorFn, as_rgb, clip_detection_box

# Our labels for OpenCV's bundled Haar cascades (cv2.data.haarcascades).
HAAR_CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "cat_face": "haarcascade_frontalcatface.xml",
    "person": "haarcascade_fullbody.xml",
    "licence_plate": "haarcascade_russian_plate_number.xml",
}


@functools.cache
def _cascade(path: str):
    import cv2

    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ValueError(f"cannot load Haar cascade {path}")
    return cascade


def haar_cascades(names: str | None = None) -> dict[str, str]:
    """Label -> cascade file for `haar:NAMES` (comma-separated); all of HAAR_CASCADES for None."""
    import cv2

    if not names:
        return {label: os.path.join(cv2.data.haarcascades, file) for label, file in HAAR_CASCADES.items()}
    out = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in HAAR_CASCADES:
            out[name] = os.path.join(cv2.data.haarcascades, HAAR_CASCADES[name])
            continue
        if os.path.isfile(name):
            out[os.path.splitext(os.path.basename(name))[0]] = name
            continue
        stem = name.removeprefix("haarcascade_").removesuffix(".xml")
        path = os.path.join(cv2.data.haarcascades, f"haarcascade_{stem}.xml")
        if not os.path.isfile(path):
            known = sorted(HAAR_CASCADES) + sorted(
                f[len("haarcascade_") : -4] for f in os.listdir(cv2.data.haarcascades) if f.endswith(".xml")
            )
            raise ValueError(
                f"unknown Haar cascade {name!r}: use one of {', '.join(known)} or a path to a .xml"
            )
        label = {
            "frontalcatface": "cat_face",
            "fullbody": "person",
            "license_plate_rus_16stages": "licence_plate",
            "russian_plate_number": "licence_plate",
        }.get(stem)
        out[label or ("face" if stem.startswith("frontalface") else stem)] = path
    return out


def haar_detector(names: str | None = None, *, min_size: float = 0.05) -> DetectorFn:
    """Detector over OpenCV Haar cascades; objects smaller than `min_size` of the short side are ignored."""
    cascades = haar_cascades(names)

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        import cv2

        out = []
        for image in images:
            gray = cv2.equalizeHist(cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY))
            # cascades are slow on big images: search a copy whose long side is at most 800
            scale = min(1.0, 800 / max(gray.shape))
            if scale < 1:
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            side = max(12, int(min_size * min(gray.shape)))
            found = []
            for label, path in cascades.items():
                boxes, _, weights = _cascade(path).detectMultiScale3(
                    gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
                )
                for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
                    box = clip_detection_box(
                        [x / scale, y / scale, (x + w) / scale, (y + h) / scale],
                        image.shape[1],
                        image.shape[0],
                    )
                    if box is not None:
                        # the cascade's level weight is unbounded; squash it into [0, 1]
                        score = float(1 / (1 + np.exp(-float(weight))))
                        found.append({"box": box, "score": score, "label": label})
            out.append(found)
        return out

    return detect
