import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, square_image
from PIL import Image

from simfusion.io.images import load_image
from simfusion.io.stage import run_stage
from simfusion.views.thumbnail import clip_box, make_thumbnail, pad_to_aspect, thumbnail_record


def test_clip_box_adds_margin_and_stays_inside():
    assert clip_box([10, 10, 30, 20], (100, 100, 3)) == (10, 10, 30, 20)
    assert clip_box([10, 10, 30, 20], (100, 100, 3), margin=0.5) == (0, 5, 40, 25)
    assert clip_box([-5, -5, 500, 500], (40, 60)) == (0, 0, 60, 40)


@pytest.mark.parametrize("box", [[1, 2, 3], [10, 10, 5, 20], [200, 200, 300, 300]])
def test_bad_boxes_are_value_errors(box):
    with pytest.raises(ValueError, match="box"):
        clip_box(box, (100, 100, 3))


def test_pad_to_aspect_centres_and_fills_with_the_border():
    image = np.full((10, 20, 3), 7, dtype=np.uint8)
    padded = pad_to_aspect(image, 1.0)
    assert padded.shape == (20, 20, 3)
    assert np.all(padded == 7)
    black = pad_to_aspect(np.full((10, 20), 200, dtype=np.uint8), 1.0, fill="black")
    assert black.shape == (20, 20)
    assert black[:5].max() == 0 and black[5:15].min() == 200 and black[15:].max() == 0
    assert pad_to_aspect(image, 2.0) is image


def test_thumbnail_crops_the_box():
    image = square_image(60, 80, box=(20, 10, 50, 40), colour=(200, 30, 30))
    thumb = make_thumbnail(image, height=32, width=32, box=[20, 10, 50, 40], margin=0.0)
    assert thumb.shape == (32, 32, 3) and thumb.dtype == np.uint8
    assert np.abs(thumb.astype(int) - (200, 30, 30)).max() <= 2  # only the red square is left


def test_thumbnail_of_a_wide_box_is_padded_not_stretched():
    image = square_image(60, 80, box=(0, 20, 80, 40), colour=(0, 0, 0), background=255)
    thumb = make_thumbnail(image, height=40, width=40, box=[0, 20, 80, 40], margin=0.0, fill="white")
    # an 80x20 strip becomes 40x10 in the middle, white above and below
    assert thumb[:12].min() > 240 and thumb[28:].min() > 240
    assert thumb[17:23].max() < 15


@pytest.mark.parametrize(
    ("height", "width", "channels", "shape"),
    [
        (64, 64, 3, (64, 64, 3)),
        (32, 48, 1, (32, 48)),
        (100, 50, 3, (100, 50, 3)),
    ],
)
def test_thumbnail_sizes_and_channels(rng, height, width, channels, shape):
    image = rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)
    assert make_thumbnail(image, height=height, width=width, channels=channels).shape == shape


def test_tiny_and_gray_images(rng):
    assert make_thumbnail(np.full((1, 1), 9, np.uint8), height=16, width=16).shape == (16, 16, 3)
    assert make_thumbnail(
        rng.integers(0, 256, (5, 3), dtype=np.uint8), height=8, width=8, channels=1
    ).shape == (8, 8)


def write_catalog(folder):
    Image.fromarray(square_image()).save(folder / "a.png")
    Image.fromarray(square_image(colour=(0, 0, 255))).save(folder / "b.jpg")
    (folder / "sub").mkdir()
    Image.fromarray(square_image(30, 90)).save(folder / "sub" / "c.webp")
    Image.fromarray(square_image()).save(folder / "flat.png")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return [
        {"id": "a", "image": "a.png", "category": "red", "box": [20, 10, 50, 40]},
        {"id": "b", "image": "b.jpg", "price": 12.5},
        {"image_id": "c", "path": "sub/c.webp"},
        {"id": "bad", "image": "bad.jpg"},
        {"id": "gone", "image": "missing.png"},
        {"id": "flat", "image": "flat.png", "box": [5, 5, 5, 9]},
    ]


def test_record_keeps_its_fields_and_gains_the_thumbnail(tmp_path):
    records = write_catalog(tmp_path)
    out = thumbnail_record(
        dict(records[0]), base_path=str(tmp_path), output_path=str(tmp_path / "t"), height=16, width=16
    )
    assert out["category"] == "red" and out["box"] == [20, 10, 50, 40]
    assert out["thumbnail"] == str(tmp_path / "t" / "a.png")
    assert load_image(out["thumbnail"]).shape == (16, 16, 3)


def test_stage_accounts_for_every_record(tmp_path):
    from functools import partial

    from simfusion.io.stage import map_records

    records = write_catalog(tmp_path)
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    stdout = io.StringIO()
    one = partial(
        thumbnail_record, base_path=str(tmp_path), output_path=str(tmp_path / "t"), height=24, width=24
    )
    counts = run_stage(
        lambda batch: map_records(batch, "thumbnail", one),
        stage="thumbnail",
        batch_size=2,
        stdin=stdin,
        stdout=stdout,
        progress=False,
    )
    out = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [r.get("id", r.get("image_id")) for r in out] == ["a", "b", "c", "bad", "gone", "flat"]
    assert counts == {"records": 6, "errors": 3}
    errors = {r["id"]: r["error"] for r in out if "error" in r}
    assert errors["bad"].startswith("thumbnail: cannot read image")
    assert errors["gone"].startswith("thumbnail: no such file")
    assert "no area" in errors["flat"]
    assert (tmp_path / "t" / "sub" / "c.webp").exists()
    assert out[1]["price"] == 12.5


def test_cli_skips_existing_unless_overwrite(tmp_path):
    records = write_catalog(tmp_path)[:1]
    line = json.dumps(records[0]) + "\n"
    command = [
        sys.executable,
        "thumbnail.py",
        "--base_image_path",
        str(tmp_path),
        "--output_image_path",
        str(tmp_path / "t"),
        "--im_height",
        "20",
        "--im_width",
        "30",
        "--im_channel",
        "1",
        "--no_progress",
    ]
    first = subprocess.run(command, input=line, capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(first.stdout)["thumbnail_size"] == [20, 30, 1]
    target = tmp_path / "t" / "a.png"
    assert load_image(target, channels=1).shape == (20, 30)
    stamp = target.stat().st_mtime_ns
    subprocess.run(command, input=line, capture_output=True, text=True, cwd=REPO, check=True)
    assert target.stat().st_mtime_ns == stamp
    subprocess.run(
        command + ["--overwrite"], input=line, capture_output=True, text=True, cwd=REPO, check=True
    )
    assert target.stat().st_mtime_ns != stamp


def test_cli_bad_flags_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "thumbnail.py", "--im_channel", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        input="",
    )
    assert result.returncode == 2 and "im_channel" in result.stderr
    result = subprocess.run(
        [sys.executable, "thumbnail.py"], capture_output=True, text=True, cwd=REPO, input=""
    )
    assert result.returncode == 2 and "--output_image_path is required" in result.stderr
