import io
import json
import os

import numpy as np
import pytest

from simfusion.cli.views import main
from simfusion.io.images import load_image, save_image
from simfusion.io.records import output_relpath
from simfusion.views.saliency import (
    VIEW_NAMES,
    compute_views,
    edge_map_canny,
    edge_maps_hed,
    foreground_image,
    foreground_weight,
    saliency_map,
)

METHODS = ("spectral_residual", "fine_grained")


def square_image(size: int = 64, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A red square on a flat gray background (optionally with seeded noise)."""
    image = np.full((size, size, 3), 120.0)
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape)
    lo, hi = size * 5 // 16, size * 11 // 16
    image[lo:hi, lo:hi] = [220, 30, 30]
    return np.clip(image, 0, 255).astype(np.uint8)


def square_mask(size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    lo, hi = size * 5 // 16, size * 11 // 16
    mask[lo:hi, lo:hi] = True
    return mask


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(48, 64, 3), (48, 64), (48, 64, 1)])
def test_saliency_map_shape_range_dtype(method, shape):
    values = saliency_map(random_image(shape), method=method)
    assert values.shape == (48, 64)
    assert values.dtype == np.float32
    assert values.min() >= 0 and values.max() <= 1
    assert values.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2), (2, 2, 3), (3, 5, 3), (32, 32, 3)])
def test_constant_and_tiny_images_give_defined_maps(method, shape):
    for image in (np.full(shape, 77, np.uint8), random_image(shape, seed=3)):
        views = compute_views([image], method=method, edges="canny")[0]
        for name in ("saliency", "edges"):
            assert views[name].shape == shape[:2]
            assert np.isfinite(views[name]).all()
            assert views[name].min() >= 0 and views[name].max() <= 1
        assert views["foreground"].shape == image.shape
    constant = compute_views([np.full(shape, 77, np.uint8)], method=method, edges="canny")[0]
    assert not constant["saliency"].any() and not constant["edges"].any()


@pytest.mark.slow  # loads TensorFlow and HED (~5 s)
def test_hed_constant_and_tiny_images():
    images = [np.full((16, 16, 3), 200, np.uint8), random_image((2, 2, 3)), np.full((1, 1), 9, np.uint8)]
    maps = edge_maps_hed(images)
    assert [m.shape for m in maps] == [(16, 16), (2, 2), (1, 1)]
    assert not maps[0].any() and not maps[2].any()
    assert all(m.dtype == np.float32 and np.isfinite(m).all() and 0 <= m.min() <= m.max() <= 1 for m in maps)


@pytest.mark.slow  # loads TensorFlow and HED (~5 s)
def test_hed_never_pads_an_image_to_a_bigger_batch_member():
    # issue 15: a 1x10000 strip in a batch padded every photo to 332x10032 and the kernel killed it
    small, strip, other = (
        random_image((40, 64, 3), seed=2),
        random_image((8, 400, 3), seed=3),
        square_image(40),
    )
    together = edge_maps_hed([small, strip, other, small.copy()])
    alone = [edge_maps_hed([image])[0] for image in (small, strip, other)]
    for batched, single in zip(together, alone + [alone[0]], strict=True):
        assert batched.shape == single.shape
        np.testing.assert_allclose(batched, single, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_saliency_is_deterministic(method):
    image = random_image((40, 40, 3), seed=1)
    assert np.array_equal(saliency_map(image, method=method), saliency_map(image.copy(), method=method))


@pytest.mark.parametrize("edges", ["canny", pytest.param("hed", marks=pytest.mark.slow)])
def test_views_are_deterministic(edges):
    images = [square_image(48, noise=5), random_image((48, 48, 3), seed=2), square_image(32)]
    first = compute_views(images, edges=edges)
    second = compute_views([image.copy() for image in images], edges=edges)
    for a, b in zip(first, second, strict=True):
        assert set(a) == set(b) == set(VIEW_NAMES)
        for name in VIEW_NAMES:
            assert np.array_equal(a[name], b[name])


def test_compute_views_returns_only_the_views_asked_for():
    image = square_image(32)
    assert set(compute_views([image], views=["edges"], edges="canny")[0]) == {"edges"}
    assert set(compute_views([image], views=("foreground",))[0]) == {"foreground"}
    assert compute_views([]) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "itti"}, "method must be one of"),
        ({"edges": "sobel"}, "edges must be one of"),
        ({"views": ["depth"]}, "unknown view"),
        ({"views": []}, "at least one view"),
        ({"fill": "pink"}, "fill must be one of"),
    ],
)
def test_compute_views_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        compute_views([square_image(16)], **options)


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        saliency_map(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="must be"):
        saliency_map(np.zeros((8, 8, 4), np.uint8))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("noise", [0, 5])
def test_foreground_keeps_the_object_and_damps_the_background(method, noise):
    image = square_image(64, noise=noise, seed=4)
    mask = square_mask(64)
    fg = foreground_image(image, saliency_map(image, method=method), fill="white")
    assert fg.shape == image.shape and fg.dtype == np.uint8
    change = np.abs(fg.astype(int) - image.astype(int)).mean(axis=2)
    assert change[mask].mean() < 5
    # the background's outer ring (away from the object's soft rim) is pushed toward white
    ring = np.zeros_like(mask)
    ring[:6], ring[-6:], ring[:, :6], ring[:, -6:] = True, True, True, True
    assert change[ring].mean() > 30
    assert fg[ring].mean() > image[ring].mean() + 30


def test_foreground_keeps_colour_and_gray():
    image = square_image(32)
    fg = foreground_image(image, saliency_map(image), fill="black")
    # the red square stays red
    assert fg[16, 16, 0] > 150 and fg[16, 16, 1] < 80
    gray = foreground_image(image[:, :, 0], saliency_map(image))
    assert gray.shape == (32, 32) and gray.dtype == np.uint8


def test_foreground_of_a_constant_image_with_border_fill_is_the_image():
    image = np.full((20, 30, 3), [10, 200, 90], np.uint8)
    assert np.array_equal(foreground_image(image, saliency_map(image), fill="border"), image)
    assert np.array_equal(foreground_weight(np.zeros((20, 30), np.float32)), np.zeros((20, 30), np.float32))


def test_foreground_rejects_a_map_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        foreground_image(square_image(32), np.zeros((16, 16), np.float32))


def test_canny_finds_the_square_border():
    image = square_image(64)
    edges = edge_map_canny(image)
    assert edges.dtype == np.float32 and set(np.unique(edges)) <= {0.0, 1.0}
    mask = square_mask(64)
    # within 2 pixels of the square's outline
    grown, shrunk = np.zeros_like(mask), np.zeros_like(mask)
    grown[18:46, 18:46], shrunk[22:42, 22:42] = True, True
    near = grown & ~shrunk
    assert edges[near].sum() > 0.9 * edges.sum() > 0


@pytest.mark.slow  # loads TensorFlow and HED (~5 s)
def test_hed_responds_on_the_square_border_more_than_in_flat_areas():
    image = square_image(64)
    edges = edge_maps_hed([image, image[:48, :40]])
    assert edges[0].shape == (64, 64) and edges[1].shape == (48, 40)
    # the square's left side at x = 20, away from the corners
    on_border = edges[0][26:38, 18:23].mean()
    flat_out, flat_in = edges[0][2:12, 2:12].mean(), edges[0][28:36, 28:36].mean()
    assert on_border > 0.5
    assert on_border > 5 * max(flat_out, flat_in)
    # the reflected margin keeps the image frame from reading as an edge
    frame = np.zeros((64, 64), bool)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = True, True, True, True
    unpadded = edge_maps_hed([image], margin=0)[0]
    assert edges[0][frame].max() < 0.05 < unpadded[frame].max()


# ---- the stage over records -----------------------------------------------------------------


def run_cli(argv, records, capsys, monkeypatch):
    text = "".join(json.dumps(record) + "\n" for record in records)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(argv + ["--no_progress", "--log_level", "ERROR"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_cli_writes_views_and_error_records(tmp_path, capsys, monkeypatch):
    thumbs, out = tmp_path / "thumbs", tmp_path / "views"
    save_image(thumbs / "a" / "one.png", square_image(48))
    save_image(thumbs / "two.jpg", square_image(48, noise=10))
    save_image(thumbs / "three.png", random_image((32, 40, 3)))
    (thumbs / "corrupt.png").write_bytes(b"not a png at all")
    records = [
        {"id": "1", "image": "a/one.png", "keep": [1, 2]},
        {"id": "2", "image": "missing.png"},
        {"id": "3", "image": "two.jpg"},
        {"id": "4", "image": "corrupt.png"},
        {"id": "5", "path": "three.png"},
        {"id": "6", "image": "a/one.png", "error": "thumbnail: earlier failure"},
    ]
    argv = ["--base_image_path", str(thumbs), "--output_image_path", str(out), "--edges", "canny"]
    result = run_cli(argv + ["--batch_size", "4"], records, capsys, monkeypatch)
    assert [r["id"] for r in result] == ["1", "2", "3", "4", "5", "6"]
    assert result[0]["keep"] == [1, 2]
    for record in (result[1], result[3]):
        assert record["error"].startswith("saliency: ")
        assert not set(VIEW_NAMES) & set(record)
    assert result[5]["error"] == "thumbnail: earlier failure" and "saliency" not in result[5]
    for record, rel in ((result[0], "a/one.png"), (result[2], "two.jpg"), (result[4], "three.png")):
        assert "error" not in record
        for view in VIEW_NAMES:
            assert record[view] == os.path.join(str(out), view, output_relpath(record))
            assert os.path.exists(record[view])
        thumb = load_image(thumbs / rel)
        saliency = np.asarray(load_image(record["saliency"], channels=1))
        assert saliency.shape == thumb.shape[:2] and saliency.max() > 200
        assert load_image(record["foreground"]).shape == thumb.shape
    from PIL import Image

    with Image.open(result[0]["edges"]) as picture:
        assert picture.mode == "L"


def test_cli_reads_the_thumbnail_where_the_thumbnail_stage_wrote_it(tmp_path, capsys, monkeypatch):
    # thumbnail.py named each output after the record's id, whatever its image path
    from simfusion.views.thumbnail import thumbnail_record

    thumbs, out = tmp_path / "thumbs", tmp_path / "views"
    save_image(tmp_path / "x" / "good.png", square_image(48))
    save_image(tmp_path / "photo-x.png", np.roll(square_image(48), (14, 14), axis=(0, 1)))
    records = [
        {"id": "photo-x", "image": str(tmp_path / "x" / "good.png")},
        {"image": "photo-x.png"},
        {"id": "crop", "image": "photo-x.png", "box": [0, 0, 10, 10]},
    ]
    options = dict(base_path=str(tmp_path), output_path=str(thumbs), height=32, width=32, margin=0.0)
    records = [thumbnail_record(dict(record), **options) for record in records]
    argv = ["--base_image_path", str(thumbs), "--output_image_path", str(out), "--edges", "canny"]
    result = run_cli(argv, records, capsys, monkeypatch)
    assert all("error" not in record for record in result)
    assert len({record["foreground"] for record in result}) == 3
    for record in result:
        assert record["saliency"] == os.path.join(str(out), "saliency", output_relpath(record))
        expected = saliency_map(load_image(record["thumbnail"]))
        saved = load_image(record["saliency"], channels=1).astype(int)
        assert np.abs(saved - np.round(expected * 255)).max() <= 1


def test_cli_skips_existing_views_unless_overwrite(tmp_path, capsys, monkeypatch):
    thumbs, out = tmp_path / "thumbs", tmp_path / "views"
    save_image(thumbs / "one.png", square_image(32))
    argv = ["--base_image_path", str(thumbs), "--output_image_path", str(out)]
    argv += ["--edges", "canny", "--views", "saliency,edges"]
    first = run_cli(argv, [{"image": "one.png"}], capsys, monkeypatch)[0]
    assert set(first) == {"image", "saliency", "edges", "view_settings"}
    assert first["view_settings"] == {
        "saliency_method": "spectral_residual",
        "edges": "canny",
        "foreground_fill": "white",
    }
    marker = np.zeros((32, 32), np.uint8)
    save_image(first["saliency"], marker)
    again = run_cli(argv, [{"image": "one.png"}], capsys, monkeypatch)[0]
    assert again == first
    assert not load_image(first["saliency"], channels=1).any()
    run_cli(argv + ["--overwrite"], [{"image": "one.png"}], capsys, monkeypatch)
    assert load_image(first["saliency"], channels=1).any()
    assert not os.path.exists(out / "foreground")


def test_cli_gray_thumbnails_give_a_gray_foreground(tmp_path, capsys, monkeypatch):
    thumbs, out = tmp_path / "thumbs", tmp_path / "views"
    save_image(thumbs / "one.png", square_image(32)[:, :, 0])
    argv = ["--base_image_path", str(thumbs), "--output_image_path", str(out), "--im_channel", "1"]
    record = run_cli(
        argv + ["--edges", "canny", "--method", "fine_grained"], [{"image": "one.png"}], capsys, monkeypatch
    )[0]
    from PIL import Image

    for view in VIEW_NAMES:
        with Image.open(record[view]) as picture:
            assert picture.mode == "L" and picture.size == (32, 32)


@pytest.mark.parametrize("argv", [["--views", "saliency,depth"], ["--views", ","], ["--method", "itti"], []])
def test_cli_rejects_bad_flags(argv, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out = [] if not argv else ["--output_image_path", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(out + argv)
    assert exc.value.code == 2
