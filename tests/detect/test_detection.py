import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA, square_image
from PIL import Image

from simfusion.cli.detect import main
from simfusion.detect.boxes import box_iou, clip_detection_box, filter_detections, main_box
from simfusion.detect.objectness import detect_objectness, working_copy
from simfusion.detect.plugins import read_label_map
from simfusion.detect.registry import make_detector
from simfusion.io.images import load_image


def tiny_detector(images):
    """A plug-in for `python:test_detection:tiny_detector`: the top-left quarter, labelled by shape."""
    return [
        [
            {
                "box": [0, 0, im.shape[1] / 2, im.shape[0] / 2],
                "score": 0.7,
                "label": f"{im.shape[0]}x{im.shape[1]}",
            }
        ]
        for im in images
    ]


def pasted(background: np.ndarray, obj: np.ndarray, x: int, y: int) -> tuple[np.ndarray, list[int]]:
    """`obj` pasted into `background` at (x, y), with its box."""
    out = background.copy()
    out[y : y + obj.shape[0], x : x + obj.shape[1]] = obj
    return out, [x, y, x + obj.shape[1], y + obj.shape[0]]


def cup_on_grass() -> tuple[np.ndarray, list[int]]:
    """The coffee cup and saucer of skimage's photo, cut out, on skimage's grass texture."""
    import cv2
    from skimage import data

    coffee = cv2.resize(data.coffee(), (300, 200), interpolation=cv2.INTER_AREA)
    mask = np.zeros(coffee.shape[:2], np.uint8)
    cv2.ellipse(mask, (139, 116), (101, 80), 0, 0, 360, 1, -1)
    ys, xs = np.nonzero(mask)
    crop = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    grass = np.repeat(data.grass()[:, :, None], 3, axis=2)
    grass = (grass * np.array([0.8, 1.0, 0.7])).astype(np.uint8)
    x, y = 230, 60
    out = grass.copy()
    region = out[y : y + crop[0].stop - crop[0].start, x : x + crop[1].stop - crop[1].start]
    keep = mask[crop].astype(bool)
    region[keep] = coffee[crop][keep]
    return out, [x, y, x + region.shape[1], y + region.shape[0]]


# ---------------------------------------------------------------------------- geometry


def test_clip_detection_box_rounds_outwards_and_clips():
    assert clip_detection_box([1.2, 2.7, 10.1, 20.0], 100, 50) == [1, 2, 11, 20]
    assert clip_detection_box([-5, -5, 500, 500], 100, 50) == [0, 0, 100, 50]
    assert clip_detection_box([30, 40, 10, 5], 100, 50) == [10, 5, 30, 40]  # corners in any order
    assert clip_detection_box([200, 10, 300, 20], 100, 50) is None
    assert clip_detection_box([5, 5, 5, 9], 100, 50) is None
    assert clip_detection_box([float("nan"), 0, 1, 1], 100, 50) is None


def test_main_box_prefers_score_then_area_and_falls_back_to_the_image():
    small = {"box": [0, 0, 10, 10], "score": 0.9, "label": "a"}
    large = {"box": [0, 0, 50, 40], "score": 0.9, "label": "b"}
    weak = {"box": [0, 0, 80, 60], "score": 0.2, "label": "a"}
    assert main_box([small, weak, large], 80, 60) == [0, 0, 50, 40]
    assert main_box([], 80, 60) == [0, 0, 80, 60]
    assert filter_detections([small, large, weak], labels=["a"]) == [small, weak]
    assert filter_detections([small, large, weak], min_score=0.5) == [small, large]
    assert filter_detections([small, large, weak], labels=["c"]) == []


def test_full_detector_covers_every_image(rng):
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(4, 4, 3), (30, 70, 3), (9, 2, 3)]]
    found = make_detector("full")(images)
    assert [d[0]["box"] for d in found] == [[0, 0, 4, 4], [0, 0, 70, 30], [0, 0, 2, 9]]
    assert all(d[0]["score"] == 1.0 and d[0]["label"] is None and d[0]["detector"] == "full" for d in found)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown detector"),
        ("keras", "needs an argument"),
        ("keras:/no/such/model.keras", "no detector model"),
        ("python:no_such_module_xyz:fn", "cannot import"),
        ("python:json:no_such_function", "no function"),
        ("haar:no_such_cascade", "unknown Haar cascade"),
        ("objectness:wrong", "objectness takes"),
    ],
)
def test_bad_detector_specs_say_what_to_do(spec, message):
    with pytest.raises(ValueError, match=message):
        make_detector(spec)


def test_python_plug_in_gets_rgb_images_and_boxes_are_clipped():
    gray = np.full((20, 40), 9, np.uint8)
    found = make_detector("python:test_detection:tiny_detector")([gray, np.zeros((7, 5, 3), np.uint8)])
    assert found[0] == [
        {"box": [0, 0, 20, 10], "score": 0.7, "label": "20x40", "detector": found[0][0]["detector"]}
    ]
    assert found[1][0]["box"] == [0, 0, 3, 4]  # 2.5 x 3.5 rounded outwards


def test_haar_finds_the_astronauts_face():
    from skimage import data

    image = data.astronaut()
    faces = make_detector("haar:face")([image])[0]
    assert faces and all(d["label"] == "face" for d in faces)
    best = max(faces, key=lambda d: d["score"])
    assert box_iou(best["box"], [175, 60, 275, 165]) > 0.6
    assert 0 <= best["score"] <= 1


def test_working_copy_sizes():
    assert working_copy(np.zeros((4, 4, 3), np.uint8)).shape == (32, 32, 3)
    assert working_copy(np.zeros((4000, 6000, 3), np.uint8), size=256).shape == (171, 256, 3)
    small = np.zeros((100, 60, 3), np.uint8)
    assert working_copy(small, size=256) is small


# ---------------------------------------------------------------------------- objectness (HED: slow)


@pytest.mark.slow
def test_objectness_finds_objects_in_original_pixels():
    plain = square_image(600, 900, box=(500, 120, 760, 420), colour=(30, 60, 200), background=235)
    grass, cup_box = cup_on_grass()
    huge = square_image(4000, 6000, box=(1000, 2000, 2500, 3500), colour=(200, 40, 40), background=250)
    gray = square_image(90, 120, box=(30, 20, 80, 70), colour=(0, 0, 0))[:, :, 0]
    rgba = np.dstack(
        [square_image(40, 40, box=(10, 10, 30, 30), colour=(0, 90, 0)), np.full((40, 40), 255, np.uint8)]
    )
    tiny = square_image(4, 4, box=(1, 1, 3, 3))
    flat = np.full((50, 70, 3), 128, np.uint8)
    images = [plain, grass, huge, gray, rgba, tiny, flat]
    found = detect_objectness(images)
    for image, result in zip(images, found, strict=True):
        (detection,) = result
        x0, y0, x1, y1 = detection["box"]
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        assert detection["label"] == "object" and 0 <= detection["score"] <= 1
    # the big images ran on 256 px copies; their boxes are still in the originals' pixels
    assert box_iou(found[0][0]["box"], [500, 120, 760, 420]) > 0.8
    assert box_iou(found[2][0]["box"], [1000, 2000, 2500, 3500]) > 0.8
    assert box_iou(found[1][0]["box"], cup_box) > 0.5
    assert box_iou(found[3][0]["box"], [30, 20, 80, 70]) > 0.8
    assert box_iou(found[4][0]["box"], [10, 10, 30, 30]) > 0.8
    assert found[0][0]["score"] > 0.5
    assert found[6][0]["score"] < 0.2  # nothing on a flat image


def write_catalog(folder) -> list[dict]:
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(square_image(60, 80, box=(40, 10, 70, 40), colour=(20, 20, 220))).save(folder / "a.png")
    Image.fromarray(square_image(40, 40)[:, :, 0]).save(folder / "gray.png")
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[5:20, 10:30] = (255, 0, 0, 255)
    Image.fromarray(rgba, mode="RGBA").save(folder / "sub" / "rgba.png")
    Image.fromarray(square_image(4, 4, box=(1, 1, 3, 3))).save(folder / "tiny.png")
    (folder / "bad.jpg").write_bytes(b"not an image")
    return [
        {"id": "a", "image": "a.png", "price": 3},
        {"id": "gray", "image": "gray.png"},
        {"id": "rgba", "path": "sub/rgba.png"},
        {"id": "tiny", "image": "tiny.png"},
        {"id": "bad", "image": "bad.jpg"},
        {"id": "gone", "image": "gone.png"},
        {"id": "nopath"},
        {"id": "broken", "image": f"{SAMPLE_DATA}/broken/truncated.jpg"},
    ]


def run_main(argv, records, monkeypatch) -> list[dict]:
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in records)))
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(argv + ["--no_progress"]) == 0
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


def test_stage_with_a_plug_in_adds_boxes_errors_and_drawings(tmp_path, monkeypatch):
    records = write_catalog(tmp_path / "in")
    argv = ["--base_image_path", str(tmp_path / "in"), "--output_image_path", str(tmp_path / "out")]
    out = run_main(
        argv + ["--detector", "python:test_detection:tiny_detector", "--batch_size", "3"],
        records,
        monkeypatch,
    )
    assert [r["id"] for r in out] == [r["id"] for r in records]
    by_id = {r["id"]: r for r in out}
    assert by_id["a"]["box"] == [0, 0, 40, 30] and by_id["a"]["price"] == 3
    assert by_id["a"]["detections"][0]["label"] == "60x80"
    assert by_id["gray"]["box"] == [0, 0, 20, 20] and by_id["rgba"]["box"] == [0, 0, 25, 15]
    assert by_id["tiny"]["box"] == [0, 0, 2, 2]
    assert load_image(by_id["rgba"]["detection_image"]).shape == (30, 50, 3)
    assert by_id["rgba"]["detection_image"] == str(tmp_path / "out" / "rgba.png")  # named after the id
    assert by_id["bad"]["error"].startswith("object_detection: cannot read image")
    assert by_id["gone"]["error"].startswith("object_detection: no such file")
    assert "no image path" in by_id["nopath"]["error"]
    assert by_id["broken"]["error"].startswith("object_detection: cannot read image")
    assert all("box" not in r for r in out if "error" in r)


def test_labels_and_min_score_fall_back_to_the_whole_image(tmp_path, monkeypatch):
    records = write_catalog(tmp_path / "in")[:1]
    base = ["--base_image_path", str(tmp_path / "in"), "--detector", "python:test_detection:tiny_detector"]
    (out,) = run_main(base + ["--labels", "car,person"], records, monkeypatch)
    assert out["detections"] == [] and out["box"] == [0, 0, 80, 60]
    assert "car, person" in out["detection_note"] and "detection_image" not in out
    (out,) = run_main(base + ["--min_score", "0.8"], records, monkeypatch)
    assert out["box"] == [0, 0, 80, 60] and "0.8" in out["detection_note"]
    (out,) = run_main(base + ["--labels", "60x80", "--min_score", "0.5"], records, monkeypatch)
    assert out["box"] == [0, 0, 40, 30] and "detection_note" not in out


@pytest.mark.slow
def test_keras_plug_in_reads_normalised_y_x_boxes(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)

    def constant(values, name):
        layer = keras.layers.Dense(len(values), kernel_initializer="zeros", name=name)
        out = layer(pooled)
        layer.set_weights([np.zeros((3, len(values))), np.array(values, np.float32)])
        return out

    boxes = keras.layers.Reshape((1, 4))(constant([0.1, 0.2, 0.5, 0.9], "boxes"))  # y0, x0, y1, x1
    model = keras.Model(inputs, [boxes, constant([0.8], "scores"), constant([2.0], "classes")])
    path = tmp_path / "detector.keras"
    model.save(path)
    (tmp_path / "labels.txt").write_text("???\nperson\ncar\n")
    detect = make_detector(f"keras:{path}", label_map=read_label_map(tmp_path / "labels.txt"))
    (found,) = detect([np.zeros((100, 200, 3), np.uint8)])
    assert found[0]["box"] == [40, 10, 180, 50] and found[0]["label"] == "car"
    assert found[0]["score"] == pytest.approx(0.8)


# ---------------------------------------------------------------------------- CLI


def test_cli_writes_records_and_error_records(tmp_path):
    records = write_catalog(tmp_path / "in")
    result = subprocess.run(
        [
            sys.executable,
            "object_detection.py",
            "--base_image_path",
            str(tmp_path / "in"),
            "--detector",
            "full",
        ],
        input="".join(json.dumps(r) + "\n" for r in records) + "{oops\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(records)
    assert {r["id"] for r in out if "error" in r} == {"bad", "gone", "nopath", "broken"}
    assert next(r for r in out if r["id"] == "a")["box"] == [0, 0, 80, 60]


def test_cli_bad_flags_exit_2():
    for flags, message in [
        (["--min_score", "2"], "--min_score"),
        (["--detector", "nope"], "unknown detector"),
        (["--labels", ","], "--labels needs"),
    ]:
        result = subprocess.run(
            [sys.executable, "object_detection.py", *flags],
            capture_output=True,
            text=True,
            cwd=REPO,
            input="",
        )
        assert result.returncode == 2 and message in result.stderr


@pytest.mark.slow
def test_savedmodel_plug_in_like_the_detection_zoo(tmp_path):
    import tensorflow as tf

    class Zoo(tf.Module):
        """Takes uint8 images of any size like a TF2 Detection Zoo model; finds one `car` (class 3)."""

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
        def __call__(self, input_tensor):
            return {
                "detection_boxes": tf.constant([[[0.5, 0.0, 1.0, 0.25], [0.0, 0.0, 0.1, 0.1]]]),
                "detection_scores": tf.constant([[0.9, 0.1]]),
                "detection_classes": tf.constant([[3.0, 1.0]]),
                "num_detections": tf.constant([2.0]),
            }

    zoo = Zoo()
    tf.saved_model.save(zoo, str(tmp_path / "saved_model"), signatures={"serving_default": zoo.__call__})
    (tmp_path / "coco.txt").write_text("???\nperson\nbicycle\ncar\n")
    detect = make_detector(
        f"keras:{tmp_path / 'saved_model'}", label_map=read_label_map(tmp_path / "coco.txt")
    )
    (found,) = detect([np.zeros((60, 80, 3), np.uint8)])
    assert [d["label"] for d in found] == ["car", "person"]
    assert found[0]["box"] == [0, 30, 20, 60] and filter_detections(found, labels=["car"]) == found[:1]
