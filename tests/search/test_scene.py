"""The index's scene profile: a view that is not scene-safe (MoveNet) serves clean queries, and a
scene query (a catalog-guided crop) is chosen and ranked exactly as by an index of the scene-safe
views alone, with their own weights and clusters term, from the same index and the same scan."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from simfusion.cli.index import main as index_main
from simfusion.cli.train import main as train_main
from simfusion.io.store import store_path, write_store
from simfusion.search.build import build_catalog_index, index_path
from simfusion.search.catalog import Catalog
from simfusion.search.clusters import CLUSTERS, SHARE, cluster_vectors, with_clusters
from simfusion.search.crops import DETECTOR, IMAGE, WINDOW, crop_kind
from simfusion.search.guided import profile_of
from simfusion.search.index import build_index, search
from simfusion.search.index_edit import add_items, remove_items
from simfusion.search.index_files import IndexFileError, load_index, meta_problem, save_index
from simfusion.search.options import SearchOptions
from simfusion.search.scene import CLEAN, SCENE, scene_profile
from simfusion.search.tune import TuneOptions, coordinate_ascent, tune_vectors
from simfusion.search.vectors import fit_transform, fuse, l2_normalize, transform
from simfusion.views.registry import DEFAULT_VIEWS, scene_safe

POSE = "movenet_pose"  # a view the registry marks as not scene-safe


def grouped(n, *, groups=8, seed=0):
    """Three views of items in `groups` groups; the pose view sees the groups too, differently."""
    rng = np.random.default_rng(seed)
    group = rng.integers(groups, size=n)
    views = {}
    for view, dim in (("hed_vgg16", 96), ("hog", 64), (POSE, 48)):
        centres = np.zeros((groups, dim))
        centres[:, :6] = 1.2 * rng.standard_normal((groups, 6))
        views[view] = l2_normalize(centres[group] + 0.6 * rng.standard_normal((n, dim)))
    return views, [f"item-{i:04d}" for i in range(n)]


def test_the_profile_leaves_out_the_views_that_are_not_scene_safe():
    assert not scene_safe(POSE) and not scene_safe("movenet_pose_late")
    assert scene_safe("hed_vgg16") and scene_safe("my_own_autoencoder")
    assert {POSE, "movenet_pose_late"} <= set(DEFAULT_VIEWS)
    weights = {"hed_vgg16": 2.0, "hog": 0.5, POSE: 4.0}
    assert scene_profile(weights) == {
        "views": ["hed_vgg16", "hog"],
        "weights": {"hed_vgg16": 2.0, "hog": 0.5},
    }
    tuned = {"hed_vgg16": 1.0, "hog": 0.0}
    assert scene_profile(weights, tuned) == {"views": ["hed_vgg16"], "weights": {"hed_vgg16": 1.0}}
    assert scene_profile({"hed_vgg16": 1.0, "hog": 1.0}) is None  # every view serves scenes already
    assert scene_profile({POSE: 1.0}) is None  # nothing would be left


@pytest.fixture(scope="module")
def indexes():
    """One index of the three views with a scene profile, and one of the scene-safe views alone at
    the profile's weights: the second is what a scene query must be ranked as."""
    views, ids = grouped(300)
    vectors, params = fit_transform(views)
    scene = {"hed_vgg16": 1.0, "hog": 3.0}
    both = build_index(
        vectors,
        ids,
        params=params,
        weights={"hed_vgg16": 3.0, "hog": 1.0, POSE: 2.0},
        clusters=True,
        scene_weights=scene,
    )
    safe = {view: vectors[view] for view in scene}
    alone = build_index(safe, ids, params=params, weights=scene, clusters=True)
    return both, alone, vectors, ids


def same_hits(first, second):
    assert [h["id"] for h in first] == [h["id"] for h in second]
    np.testing.assert_allclose([h["score"] for h in first], [h["score"] for h in second], atol=1e-4)
    for a, b in zip(first, second, strict=True):
        assert a["scores"].keys() == b["scores"].keys()


def test_a_scene_search_ranks_as_an_index_of_the_scene_safe_views_alone(indexes):
    both, alone, vectors, ids = indexes
    assert both.meta["scene"]["views"] == ["hed_vgg16", "hog"] and both.scene_views == ["hed_vgg16", "hog"]
    assert both.meta["scene"]["clusters"]["dim"] == alone.meta["clusters"]["dim"]
    queries = {view: v[:25] + 0.05 for view, v in vectors.items()}  # not catalog items: new photos
    for share in (None, 0.1):
        scene = search(both, queries, k=10, profile=SCENE, clusters_share=share)
        truth = search(alone, {v: queries[v] for v in ("hed_vgg16", "hog")}, k=10, clusters_share=share)
        for first, second in zip(scene, truth, strict=True):
            same_hits(first, second)
            assert POSE not in first[0]["scores"] and CLUSTERS in first[0]["scores"]
    # views named at query time still narrow the search, with no clusters term, in either profile
    for found in search(both, queries, k=5, views=["hog"], profile=SCENE):
        assert set(found[0]["scores"]) == {"hog"}


def test_a_clean_search_ranks_by_the_documented_score_and_ignores_the_scene_block(indexes):
    both, _, vectors, ids = indexes
    fused = with_clusters(fuse(vectors, both.weights), both.params)  # no scene block
    queries = {view: v[:15] for view, v in vectors.items()}
    for row, found in enumerate(search(both, queries, k=10)):
        truth = np.argsort(-(fused @ fused[row]), kind="stable")[:10]
        assert [hit["id"] for hit in found] == [ids[i] for i in truth]
        for hit in found:
            views_part = (3 * hit["scores"]["hed_vgg16"] + hit["scores"]["hog"] + 2 * hit["scores"][POSE]) / 6
            expected = (1 - SHARE) * views_part + SHARE * hit["scores"][CLUSTERS]
            assert hit["score"] == pytest.approx(expected, abs=1e-4)
    # an index without the profile (every view scene-safe) answers a scene search as a clean one
    safe = {view: vectors[view] for view in ("hed_vgg16", "hog")}
    plain = build_index(safe, ids, params=fit_transform(safe)[1], clusters=True)
    assert "scene" not in plain.meta
    first = search(plain, {v: queries[v] for v in safe}, k=5, profile=SCENE)
    for a, b in zip(first, search(plain, {v: queries[v] for v in safe}, k=5), strict=True):
        same_hits(a, b)
    with pytest.raises(ValueError, match="profile"):
        search(both, queries, k=3, profile="sunny")


def test_added_items_get_the_scene_block_and_a_saved_index_keeps_the_profile(indexes, tmp_path):
    both, alone, vectors, ids = indexes
    extra, _ = grouped(20, seed=5)
    new = transform(extra, both.params)
    names = [f"new-{i}" for i in range(20)]
    for index in (both, alone):
        add_items(index, names, {view: new[view] for view in index.views})
        remove_items(index, ids[:10])
    save_index(both, str(tmp_path / "index"))
    again = load_index(str(tmp_path / "index"))
    assert again.meta["scene"] == both.meta["scene"]
    queries = {view: v[:4] for view, v in new.items()}
    scene = search(again, queries, k=8, profile=SCENE)
    truth = search(alone, {v: queries[v] for v in alone.views}, k=8)
    for first, second in zip(scene, truth, strict=True):
        same_hits(first, second)
    assert [found[0]["id"] for found in scene] == names[:4]


def test_an_index_json_with_a_bad_scene_entry_is_refused(indexes, tmp_path):
    both, *_ = indexes
    folder = tmp_path / "index"
    save_index(both, str(folder))
    meta = json.loads((folder / "index.json").read_text())
    assert meta_problem(meta) is None
    for bad in ({"weights": {"nope": 1.0}}, {"weights": {"hog": 0}}, {"weights": {}}, ["hog"]):
        assert "scene" in meta_problem({**meta, "scene": bad})
    (folder / "index.json").write_text(json.dumps({**meta, "scene": {"weights": {"nope": 1.0}}}))
    with pytest.raises(IndexFileError, match="scene"):
        load_index(str(folder))


def test_the_tuning_gives_the_scene_safe_views_weights_of_their_own():
    """Copies of sampled items as queries: the tuning reports a scene profile over the scene-safe
    views only, and none where every view is scene-safe."""
    views, _ = grouped(200, seed=2)
    rng = np.random.default_rng(4)
    originals = np.sort(rng.choice(200, 40, replace=False))
    copies = {view: v[originals] + 0.2 * rng.standard_normal(v[originals].shape) for view, v in views.items()}
    options = TuneOptions(try_whiten=False)
    report = tune_vectors(views, copies, own=originals, originals=originals, options=options)
    scene = report["scene"]
    assert set(scene["weights"]) == {"hed_vgg16", "hog"} and set(scene["views"]) <= {"hed_vgg16", "hog"}
    assert scene["views"] and scene["tuned"]["J"] > 0
    assert all(report["weights"][view] > 0 for view in scene["views"])  # the index holds them
    safe = {view: views[view] for view in ("hed_vgg16", "hog")}
    alone = tune_vectors(
        safe, {v: copies[v] for v in safe}, own=originals, originals=originals, options=options
    )
    assert "scene" not in alone and alone["weights"] == scene["weights"]  # the same search, the same answer


def scene_model(folder, n=120):
    """A model folder whose store holds the three views (as autoencoder maps, no trained encoders)."""
    views, ids = grouped(n, seed=3)
    records = [{"id": key, "image": f"{key}.jpg", "category": "bag"} for key in ids]
    attrs = {"kind": "autoencoder", "objective": "plain", "input_size": [32, 32, 3]}
    stored = {
        view: (ids, v.astype(np.float32), {**attrs, "model": f"{view}.keras"}) for view, v in views.items()
    }
    folder.mkdir(parents=True)
    write_store(store_path(folder), catalog_records=records, views=stored, compression=None)
    weights = {"hed_vgg16": 3.0, "hog": 1.0, POSE: 2.0}
    index = build_catalog_index(
        store_path(folder), weights=weights, scene_weights={"hog": 1.0, "hed_vgg16": 1.0}
    )
    save_index(index, index_path(folder))
    info = {
        "input_size": [32, 32, 3],
        "views": {view: {"kind": "autoencoder", "source": view} for view in views},
    }
    (folder / "training.json").write_text(json.dumps(info))
    return views


def test_the_catalog_ranks_a_guided_query_with_the_scene_profile(tmp_path):
    """Catalog.rank: a query answered from a guided crop (its record has a `query_box`) is searched
    with the scene profile and the guided share, the others with the index's own views, in one call."""
    views = scene_model(tmp_path / "model")
    catalog = Catalog.open(tmp_path / "model")
    assert catalog.index.scene_views == ["hed_vgg16", "hog"]
    queries = catalog.vectors({view: v[:2] + 0.05 for view, v in views.items()})
    records = [{"id": "shot"}, {"id": "scene", "query_box": [0, 0, 10, 10], "query_crop": WINDOW}]
    assert [catalog.profile_of(r) for r in records] == [CLEAN, SCENE]
    # a guided query whose best fit was its detector's box or its whole image is a clean shot
    for kind, profile in ((DETECTOR, CLEAN), (IMAGE, CLEAN), (WINDOW, SCENE)):
        assert profile_of({"query_box": [0, 0, 4, 4], "query_crop": kind}) == profile
    assert profile_of({"query_box": [0, 0, 4, 4]}) == SCENE  # a record from before query_crop
    ranked = catalog.rank(queries, records, SearchOptions(k=5))
    clean, scene = (results for results, _ in ranked)
    assert POSE in clean[0]["scores"] and POSE not in scene[0]["scores"]
    for row, (results, profile, share) in enumerate(((clean, CLEAN, SHARE), (scene, SCENE, 0.1))):
        one = {view: q[row : row + 1] for view, q in queries.items()}
        truth = search(catalog.index, one, k=5, profile=profile, clusters_share=share)[0]
        assert [hit["id"] for hit in results] == [hit["id"] for hit in truth]
        assert [hit["score"] for hit in results] == [hit["score"] for hit in truth]


@pytest.mark.slow
def test_fusion_py_gives_an_index_with_movenet_a_scene_profile(tmp_path, coco_models, monkeypatch, capsys):
    """train.py with a MoveNet view and fusion.py's defaults: the index keeps a scene profile of the
    other views, tuned, with its own clusters projection, and says so in its summary."""
    from tests.search.test_tune import write_thumbnails

    monkeypatch.setenv("SIMFUSION_MODELS", coco_models)
    records = write_thumbnails(tmp_path, np.random.default_rng(0), n=90)
    model = tmp_path / "model"
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    argv = ["--model_save_path", str(model), "--views", f"hog,tiny,{POSE}", "--im_height", "48"]
    argv += ["--im_width", "48", "--no_progress"]
    assert train_main(argv, stdin=stdin, stdout=io.StringIO()) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert index_main(["--model_save_path", str(model), "--tune_images", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((model / "index" / "index.json").read_text())
    assert meta["tuning"]["scene"]["weights"].keys() <= {"hog", "tiny"}
    assert summary["scene"] == meta["scene"] and POSE not in meta["scene"]["views"]
    assert set(meta["scene"]["views"]) <= set(meta["views"]) - {POSE}
    assert meta["scene"]["clusters"]["dim"] > 0
    index = load_index(str(model / "index"))
    fused = fuse(
        {v: np.eye(1, index.meta["dims"][v])[0][None] for v in index.scene_views},
        index.meta["scene"]["weights"],
    )
    assert cluster_vectors(fused, index.params, "scene/").shape == (1, meta["scene"]["clusters"]["dim"])


def test_a_view_the_scene_profile_needs_is_kept_by_the_tuning():
    """The clean tuning drops a view that adds nothing to it; asked to keep it (the scene profile
    weighs it), the same search gives it the best weight above 0 instead."""
    from tests.search.test_tune import toy_problem

    problem = toy_problem(np.random.default_rng(0))
    assert coordinate_ascent(problem, ["good", "noise"], TuneOptions())["noise"] == 0
    kept = coordinate_ascent(problem, ["good", "noise"], TuneOptions(), keep=["noise"])
    assert kept["noise"] > 0 and kept["good"] > 0


def test_a_chosen_crop_says_what_it_is():
    boxes = [[5, 5, 40, 40], [0, 0, 64, 48], [0, 0, 24, 24], [8, 0, 32, 24]]
    assert [crop_kind(boxes, box) for box in boxes] == [DETECTOR, IMAGE, WINDOW, WINDOW]
    assert crop_kind(boxes, [9, 1, 33, 25]) == WINDOW  # a nudged window
