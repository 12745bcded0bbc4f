import json
import os

import numpy as np
import pytest
from conftest import square_image

from simfusion.detect.registry import catalog_detector
from simfusion.pipeline import NO_DETECTOR, Pipeline, detect_boxes, load_pipeline, view_images


def pipeline(**options):
    sources = {
        "thumbnail": "thumbnail",
        "edges": "edges",
        "foreground": "foreground",
        "hed_vgg16": "thumbnail",
    }
    return Pipeline(height=24, width=32, channels=3, sources=sources, edges="canny", **options)


def test_view_images_shapes_and_dtypes():
    images = [square_image(60, 80), square_image(90, 50, box=(5, 5, 40, 60))]
    views, found = view_images(
        images, ["thumbnail", "edges", "foreground", "hed_vgg16"], pipeline(detector="none")
    )
    assert views["thumbnail"].shape == (2, 24, 32, 3) and views["thumbnail"].dtype == np.uint8
    assert views["edges"].shape == (2, 24, 32) and views["edges"].dtype == np.uint8
    assert views["foreground"].shape == (2, 24, 32, 3)
    assert views["hed_vgg16"] is views["thumbnail"]  # a pretrained view reads its source's images
    assert found == [{}, {}] and views["edges"].max() > 0


def test_a_given_box_is_used_and_others_are_detected():
    image = square_image(80, 80, box=(40, 40, 80, 80), colour=(0, 0, 0))
    cropped, found = view_images(
        [image, image],
        ["thumbnail"],
        pipeline(detector="saliency", margin=0.0),
        boxes=[[40, 40, 80, 80], None],
    )
    assert found[0] == {} and set(found[1]) == {"detections", "box"}
    assert cropped["thumbnail"][0].max() < 10  # the black square fills the crop
    whole, _ = view_images([image], ["thumbnail"], pipeline(detector=NO_DETECTOR))
    assert whole["thumbnail"][0].max() == 255  # the white background is still there


def test_detect_boxes_none_and_full():
    image = square_image()
    assert detect_boxes([image], detector="none") == [{}]
    (result,) = detect_boxes([image], detector="full")
    assert result["box"] == [0, 0, 80, 60]


def test_uncomputable_view_is_a_clear_error():
    odd = Pipeline(height=8, width=8, channels=3, sources={"sketch": "sketch"})
    with pytest.raises(ValueError, match="sketch.*cannot be computed.*--views"):
        view_images([square_image()], ["sketch"], odd)


def test_catalog_detector_follows_the_catalog():
    assert catalog_detector([{"id": "a"}]) == NO_DETECTOR
    assert catalog_detector([{"box": [0, 0, 1, 1]}]) is None
    assert (
        catalog_detector(
            [{"box": [0, 0, 1, 1], "detections": [{"box": [0, 0, 1, 1], "detector": "saliency"}]}]
        )
        == "saliency"
    )


def test_load_pipeline_reads_training_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.py"):
        load_pipeline(tmp_path)
    info = {
        "input_size": [32, 48, 1],
        "views": {"thumbnail": {"source": "thumbnail"}},
        "pipeline": {"edges": "canny"},
    }
    with open(os.path.join(tmp_path, "training.json"), "w") as out:
        json.dump(info, out)
    found = load_pipeline(tmp_path, detector="full", edges=None)
    assert (found.height, found.width, found.channels) == (32, 48, 1)
    assert (
        found.edges == "canny" and found.detector == "full" and found.saliency_method == "spectral_residual"
    )
