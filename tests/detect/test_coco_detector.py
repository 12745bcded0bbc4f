"""The labelled COCO detector and `auto` on real photos (needs the model cache: fetched in set-up)."""

import io
import json
import sys

import numpy as np
import pytest
from conftest import SAMPLE_DATA, square_image
from PIL import Image

from simfusion.cli.detect import main
from simfusion.detect.boxes import box_iou
from simfusion.detect.registry import make_detector
from simfusion.io.images import load_image

pytestmark = pytest.mark.slow


def photo(name: str) -> np.ndarray:
    return load_image(f"{SAMPLE_DATA}/photos/{name}.jpg", channels=3)


def run_main(argv, records, monkeypatch) -> list[dict]:
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in records)))
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(argv + ["--no_progress"]) == 0
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


def test_coco_labels_person_keeps_only_person_boxes(coco_models, tmp_path, monkeypatch):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    records = [
        {"id": "astronaut", "image": "astronaut.png"},
        {"id": "own", "image": "astronaut.png", "label": 7},
    ]
    base = ["--base_image_path", str(tmp_path), "--detector", "coco"]
    everything, _ = run_main(base, records, monkeypatch)
    assert {d["label"] for d in everything["detections"]} - {"person"}  # the photo has other things too
    kept, own = run_main(base + ["--labels", "person"], records, monkeypatch)
    assert kept["detections"] and {d["label"] for d in kept["detections"]} == {"person"}
    best = max(kept["detections"], key=lambda d: d["score"])
    assert kept["box"] == best["box"] and kept["label"] == "person"
    assert box_iou(kept["box"], [0, 0, 370, 512]) > 0.8  # the astronaut, in the photo's own pixels
    assert own["label"] == 7 and own["box"] == kept["box"]  # a record's own label is kept
    (strict,) = run_main(base + ["--labels", "person", "--min_score", "0.9"], records[:1], monkeypatch)
    assert strict["detections"] == [] and strict["box"] == [0, 0, 512, 512] and "label" not in strict


@pytest.mark.parametrize("spec", ["coco", "coco:nanodet"])
def test_coco_labels_the_bundled_photos(coco_models, spec):
    names = {"motorcycle": "motorcycle", "coffee": "cup", "astronaut": "person"}
    found = make_detector(spec)([photo(name) for name in names])
    for (name, label), detections in zip(names.items(), found, strict=True):
        best = max(detections, key=lambda d: d["score"])
        assert best["label"] == label, (name, detections[:3])
        assert all(d["detector"] == spec and 0 < d["score"] <= 1 for d in detections)
    moto = photo("motorcycle")
    best = max(found[0], key=lambda d: d["score"])
    x0, y0, x1, y1 = best["box"]
    assert x1 - x0 > 0.6 * moto.shape[1] and y1 - y0 > 0.6 * moto.shape[0]  # the whole motorbike


def test_auto_falls_back_to_objectness_where_coco_is_unsure(coco_models):
    plain = square_image(300, 400, box=(120, 80, 260, 220), colour=(30, 60, 200), background=235)
    astronaut, square = make_detector("auto")([photo("astronaut"), plain])
    assert max(astronaut, key=lambda d: d["score"])["label"] == "person"
    assert [d["label"] for d in square] == ["object"]
    assert box_iou(square[0]["box"], [120, 80, 260, 220]) > 0.8
    (everything,) = make_detector("auto:0")([plain])
    assert all(d["label"] != "object" for d in everything)  # threshold 0: COCO's answer, however unsure


@pytest.mark.parametrize(
    "spec, message", [("coco:yolo", "coco takes"), ("auto:2", "auto takes"), ("auto:x", "auto takes")]
)
def test_bad_coco_specs_say_what_to_do(coco_models, spec, message):
    with pytest.raises(ValueError, match=message):
        make_detector(spec)
