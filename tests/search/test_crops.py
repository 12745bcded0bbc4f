"""Catalog-guided crops: a query the detector is unsure of is answered from the crop most like the catalog."""

import io
import json
import os

import numpy as np
import pytest
from conftest import SAMPLE_DATA, sample_records

from simfusion.detect.boxes import box_iou
from simfusion.io.images import load_image
from simfusion.search.crops import (
    MAX_WINDOWS_PER_SCALE,
    NUDGED_FROM,
    WINDOW_SCALES,
    best_crop,
    crop_fit,
    is_unsure,
    nudged_boxes,
    window_boxes,
)


def test_windows_cover_the_image_at_each_scale():
    boxes = window_boxes(200, 300, scales=(0.5,))
    assert boxes[0] == [0, 0, 300, 200]  # the whole image comes first
    squares = boxes[1:]
    assert all(x1 - x0 == y1 - y0 == 100 for x0, y0, x1, y1 in squares)
    assert all(0 <= x0 and x1 <= 300 and 0 <= y0 and y1 <= 200 for x0, y0, x1, y1 in squares)
    assert len(squares) == 4 * 7  # a third of a window apart: y 0, 33, 66, 99; x 0, 33, ..., 198
    assert window_boxes(10, 10, scales=(0.5,)) == [[0, 0, 10, 10]]  # windows under 8 px are skipped


def test_a_long_thin_image_gets_windows_spread_out_not_thousands_of_them():
    assert len(window_boxes(320, 320)) == 1 + 36 + 16 + 4  # a square photo: every scale at its step
    assert len(window_boxes(1080, 1920)) == 121 and len(window_boxes(320, 640)) == 143  # photos keep theirs
    tiny = np.array(window_boxes(1000, 1000, scales=(0.05,))[1:])  # many both ways: a square grid
    assert len(tiny) <= MAX_WINDOWS_PER_SCALE and len(set(tiny[:, 0])) == len(set(tiny[:, 1])) > 1
    for height, width in ((30, 2900), (2900, 30), (100, 10000)):
        boxes = window_boxes(height, width)
        assert len(boxes) <= 1 + MAX_WINDOWS_PER_SCALE * len(WINDOW_SCALES)  # 9,885 at 30 x 2,900 before
        squares = np.array(boxes[1:])
        assert squares[:, :2].min() == 0 and (squares[:, 2:] <= [width, height]).all()
        far_end = squares[:, 2].max() if width > height else squares[:, 3].max()
        assert far_end == max(height, width)  # spread from one end of the long side to the other
        assert (squares[:, 2] - squares[:, 0] == squares[:, 3] - squares[:, 1]).all()


def test_only_a_weak_detection_is_unsure():
    assert is_unsure({"detections": [{"box": [0, 0, 5, 5], "score": 0.2}], "box": [0, 0, 5, 5]})
    assert is_unsure({"detections": [], "box": None})
    assert not is_unsure({"detections": [{"box": [0, 0, 5, 5], "score": 0.9}], "box": [0, 0, 5, 5]})
    assert not is_unsure({})  # the record gave its own box: no detector ran


def test_crop_fit_is_the_mean_of_the_best_hits():
    hits = [[{"score": 0.9}, {"score": 0.7}], [], [{"score": 0.5}] * 8]
    fit = crop_fit(hits, top=5)
    assert fit[0] == pytest.approx(0.8) and fit[1] == -np.inf and fit[2] == pytest.approx(0.5)


def test_nudges_shift_and_rescale_the_box_inside_the_image():
    nudged = nudged_boxes([30, 30, 90, 90], 120, 200, shift=1 / 6, scales=(0.5, 1.5))
    assert len(nudged) == 10 and [30, 30, 90, 90] not in nudged
    assert [20, 20, 80, 80] in nudged and [40, 30, 100, 90] in nudged  # 10 px: a sixth of 60
    assert [45, 45, 75, 75] in nudged and [15, 15, 105, 105] in nudged  # about the centre
    edge = nudged_boxes([0, 0, 60, 40], 40, 60, shift=1 / 6, scales=(2.0,))
    assert all(0 <= x0 < x1 <= 60 and 0 <= y0 < y1 <= 40 for x0, y0, x1, y1 in edge)
    assert [0, 0, 60, 40] in edge  # the doubled box, clipped to the image, not dropped
    assert nudged_boxes([0, 0, 9, 9], 9, 9, shift=0.5, scales=(0.5,)) == []  # under 8 px: none


def test_the_detectors_box_wins_a_near_tie():
    assert best_crop(np.array([0.80, 0.805, 0.7]), prior=0.01) == 0
    assert best_crop(np.array([0.80, 0.83, 0.7]), prior=0.01) == 1


@pytest.fixture(scope="module")
def catalog_model(tmp_path_factory):
    """A catalog of clean sample products (hog and tiny views), and one held-out sneaker."""
    return train_catalog(tmp_path_factory.mktemp("crops"), per_class=4)


@pytest.fixture(scope="module")
def clustered_model(tmp_path_factory):
    """The same with 75 products: enough for the index's clusters term."""
    return train_catalog(tmp_path_factory.mktemp("crops_clustered"), per_class=15)


def train_catalog(out, *, per_class: int):
    from simfusion.cli.index import main as fusion_main
    from simfusion.cli.train import main as train_main
    from simfusion.views.thumbnail import thumbnail_record

    records = sample_records(per_class=per_class)
    held = next(r for r in reversed(records) if r["category"] == "sneaker")
    catalog = [r for r in records if r is not held]
    views = os.path.join(out, "views")
    for record in catalog:
        thumbnail_record(
            record, base_path=SAMPLE_DATA, output_path=os.path.join(views, "thumbnail"), height=64, width=64
        )
    model = os.path.join(out, "model")
    argv = ["--model_save_path", model, "--base_image_path_for_model", views, "--im_height", "64"]
    argv += ["--im_width", "64", "--views", "hog,tiny", "--no_progress"]
    stdin = io.StringIO("\n".join(json.dumps(r) for r in catalog))
    assert train_main(argv, stdin=stdin, stdout=io.StringIO()) == 0
    assert fusion_main(["--model_save_path", model, "--no_tune"]) == 0
    return model, held


def in_a_scene(product: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The product (light on black) pasted small into a corner of a busy real photo, with its box."""
    import cv2
    import skimage.data

    scene = cv2.resize(skimage.data.coffee(), (360, 240), interpolation=cv2.INTER_AREA)
    item = cv2.resize(product, (90, 90), interpolation=cv2.INTER_AREA)
    alpha = np.clip(item.astype(np.float32).max(axis=2, keepdims=True) / 40.0, 0, 1)
    x, y = 250, 130
    region = scene[y : y + 90, x : x + 90].astype(np.float32)
    scene[y : y + 90, x : x + 90] = (alpha * item + (1 - alpha) * region).astype(np.uint8)
    return scene, [x, y, x + 90, y + 90]


@pytest.mark.slow
def test_an_unsure_query_is_answered_from_the_crop_holding_the_product(catalog_model):
    from simfusion.search.catalog import Catalog

    model, held = catalog_model
    catalog = Catalog.open(model, detector="objectness")  # its thumbnails were cut without detection
    scene, box = in_a_scene(load_image(os.path.join(SAMPLE_DATA, held["image"])))
    [detected] = catalog.search_images([scene], k=10, crops="detector")
    [guided] = catalog.search_images([scene], k=10)
    assert "query_box" not in detected
    assert box_iou(guided["query_box"], box) > 0.5  # the detector's own box: IoU 0.11

    def sneakers(answer):
        return sum(hit["category"] == "sneaker" for hit in answer["results"])

    assert sneakers(guided) >= 3 and sneakers(guided) > sneakers(detected)
    [clean] = catalog.search_images([load_image(os.path.join(SAMPLE_DATA, held["image"]))], k=3)
    assert "query_box" not in clean  # a clean product shot: the detector is sure, nothing is guided
    assert clean["results"][0]["category"] == "sneaker"
    with pytest.raises(ValueError, match="crops must be one of"):
        catalog.search_images([scene], crops="everywhere")


@pytest.mark.slow
def test_a_large_query_is_guided_on_a_shrunk_copy_and_its_box_is_in_its_own_pixels(catalog_model):
    import cv2

    from simfusion.search.catalog import Catalog
    from simfusion.search.crops import box_between

    model, held = catalog_model
    catalog = Catalog.open(model, detector="objectness")
    scene, box = in_a_scene(load_image(os.path.join(SAMPLE_DATA, held["image"])))
    large = cv2.resize(scene, (360 * 6, 240 * 6), interpolation=cv2.INTER_CUBIC)  # 2160 x 1440
    [guided] = catalog.search_images([large], k=10)
    # in the query's own pixels (0.47; 0.55 from the full-size image, on the product either way)
    assert box_iou(guided["query_box"], [6 * v for v in box]) > 0.4
    assert sum(hit["category"] == "sneaker" for hit in guided["results"]) >= 3
    assert box_between([0, 0, 1024, 683], (683, 1024), (1440, 2160)) == [0, 0, 2160, 1440]
    assert box_between([10, 20, 30, 40], (100, 100), (100, 100)) == [10, 20, 30, 40]


@pytest.mark.slow
def test_a_narrowed_search_chooses_its_crop_with_its_own_views(catalog_model):
    """`views=[tiny]` (predict.py --views tiny) chooses the crop by tiny's own fit: the crop that
    choose_crop gives for tiny alone, from candidates encoded once."""
    from simfusion.pipeline import encode_images
    from simfusion.search.catalog import Catalog
    from simfusion.search.crops import window_boxes

    model, held = catalog_model
    catalog = Catalog.open(model, detector="objectness")
    scene, _ = in_a_scene(load_image(os.path.join(SAMPLE_DATA, held["image"])))
    maps, found = encode_images(
        [scene], model_save_path=model, views=["hog", "tiny"], pipeline=catalog.pipeline
    )
    boxes, crops = catalog.crop_maps(scene, found[0], {view: maps[view][0] for view in maps})
    assert len(boxes) == len(window_boxes(*scene.shape[:2])) + 1 == len(crops["hog"]) == len(crops["tiny"])
    assert boxes[0] == list(found[0]["box"])
    own, fused = catalog.choose_crop(crops, views=["tiny"]), catalog.choose_crop(crops)
    assert own != fused  # tiny alone fits another window than hog and tiny together
    assert min(own, fused) >= NUDGED_FROM  # both windows: each is then nudged with its own views
    [narrowed] = catalog.search_images([scene], k=10, views=["tiny"])
    tiny_box, _ = catalog.refine_crop(scene, boxes[own], {"tiny": crops["tiny"][own]})
    assert narrowed["query_box"] == tiny_box
    [default] = catalog.search_images([scene], k=10)
    fused_box, _ = catalog.refine_crop(scene, boxes[fused], {view: crops[view][fused] for view in crops})
    assert default["query_box"] == fused_box


@pytest.mark.slow
def test_the_whole_image_is_answered_from_as_it_is(catalog_model, monkeypatch):
    """When the whole image fits best (a near-duplicate of a catalog photo), it is not nudged:
    a nudge would cut part of the photo away."""
    from simfusion.search.catalog import Catalog

    model, held = catalog_model
    catalog = Catalog.open(model, detector="objectness")
    scene, _ = in_a_scene(load_image(os.path.join(SAMPLE_DATA, held["image"])))
    monkeypatch.setattr("simfusion.search.guided.best_crop", lambda fits: 1)  # row 1: the whole image
    [answer] = catalog.search_images([scene], k=3)
    assert answer["query_box"] == [0, 0, scene.shape[1], scene.shape[0]]
    assert answer["query_crop"] == "image"  # a clean shot: ranked with the index's own views


@pytest.mark.slow
def test_refining_a_crop_never_fits_worse_and_finds_a_product_it_half_missed(catalog_model):
    """A window holding half the product is nudged onto it; the fit never falls."""
    from simfusion.pipeline import encode_images
    from simfusion.search.catalog import Catalog

    model, held = catalog_model
    catalog = Catalog.open(model, detector="objectness")
    scene, box = in_a_scene(load_image(os.path.join(SAMPLE_DATA, held["image"])))
    start = [box[0] - 30, box[1] - 30, box[2] - 30, box[3] - 30]  # a third of the side off, both ways

    def fit(crop):
        maps, _ = encode_images([scene], model_save_path=model, views=["hog", "tiny"], boxes=[crop])
        return catalog.crop_fits(maps)[0], maps

    start_fit, maps = fit(start)
    refined, refined_maps = catalog.refine_crop(scene, start, {view: m[0] for view, m in maps.items()})
    assert box_iou(refined, box) > box_iou(start, box) + 0.2
    assert catalog.crop_fits({view: m[None] for view, m in refined_maps.items()})[0] >= start_fit
    assert fit(refined)[0] == pytest.approx(
        catalog.crop_fits({v: m[None] for v, m in refined_maps.items()})[0]
    )


def views_and_term(hit) -> tuple[float, float]:
    """A hit's views part (hog and tiny at equal weights: --no_tune) and its clusters score."""
    return 0.5 * hit["scores"]["hog"] + 0.5 * hit["scores"]["tiny"], hit["scores"]["clusters"]


@pytest.mark.slow
def test_a_guided_query_gives_the_clusters_term_less_say(clustered_model):
    """The crop's fit and a guided query's ranking use the term at FIT_SHARE and GUIDED_SHARE (a
    busy scene's window can look like one of the catalog's kinds); a clean query keeps the
    index's share, and a `query_box` left in an input record from an earlier answer is dropped."""
    from simfusion.search.catalog import Catalog
    from simfusion.search.crops import GUIDED_SHARE

    model, held = clustered_model
    catalog = Catalog.open(model, detector="objectness")
    share = catalog.index.clusters_share
    assert share == 0.5 and GUIDED_SHARE < share
    product = load_image(os.path.join(SAMPLE_DATA, held["image"]))
    scene, _ = in_a_scene(product)
    [guided, clean] = catalog.search_images([scene, product], [{}, {"query_box": [0, 0, 5, 5]}], k=10)
    assert "query_box" in guided and "query_box" not in clean
    for answer, expected_share in ((guided, GUIDED_SHARE), (clean, share)):
        for hit in answer["results"]:
            views, term = views_and_term(hit)
            assert hit["score"] == pytest.approx(
                (1 - expected_share) * views + expected_share * term, abs=1e-4
            )
