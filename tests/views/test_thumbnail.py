import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, square_image
from PIL import Image

from simfusion.io.images import load_image
from simfusion.io.records import output_relpath
from simfusion.io.stage import run_stage
from simfusion.views.thumbnail import clip_box, make_thumbnail, pad_to_aspect, thumbnail_record


def test_clip_box_adds_margin_and_stays_inside():
    assert clip_box([10, 10, 30, 20], (100, 100, 3)) == (10, 10, 30, 20)
    assert clip_box([10, 10, 30, 20], (100, 100, 3), margin=0.5) == (0, 5, 40, 25)
    assert clip_box([-5, -5, 500, 500], (40, 60)) == (0, 0, 60, 40)


BAD_BOXES = [
    [1, 2, 3],
    [10, 10, 5, 20],
    [200, 200, 300, 300],
    [0, 0, float("inf"), 10],
    [0, 0, 1e400, 10],
    [float("nan"), 0, 5, 5],
    [-1.7e308, 0, 1.7e308, 5],
    5,
    True,
    "0,0,5,5",
    "abcd",
    [[0], [0], [5], [5]],
    [[0, 0], [5, 5]],
    [True, 0, 5, 5],
    ["0", "0", "5", "5"],
    {"x0": 0, "y0": 0, "x1": 5, "y1": 5},
    [5, 5, 5, 5],
    [5, 5, 2, 2],
    [],
]


@pytest.mark.parametrize("box", BAD_BOXES)
def test_bad_boxes_are_value_errors(box):
    with pytest.raises(ValueError, match="box"):
        clip_box(box, (100, 100, 3))


def test_huge_finite_boxes_are_clipped():
    assert clip_box([-1e300, -1e300, 1e300, 1e300], (40, 60), margin=10.0) == (0, 0, 60, 40)
    with pytest.raises(ValueError, match="margin"):
        clip_box([0, 0, 5, 5], (40, 60), margin=float("inf"))


def test_thumbnail_of_a_long_strip_never_builds_the_padded_canvas():
    # a 1x5000 crop padded to a square first would be a 5000x5000 canvas; shrunk first it is tiny
    import tracemalloc

    image = np.zeros((5000, 3, 3), np.uint8)
    image[:, 1] = 255
    tracemalloc.start()
    try:
        thumb = make_thumbnail(image, height=16, width=16, margin=0.0, fill="black")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # numpy reports its buffers to tracemalloc; the padded canvas is 75 MB
    assert thumb.shape == (16, 16, 3)
    assert thumb[:, 7].max() > 0 and thumb[:, :7].max() == 0 and thumb[:, 8:].max() == 0


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
    assert out["thumbnail"] == str(tmp_path / "t" / output_relpath(records[0]))
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
    assert counts == {"records": 6, "errors": 3}  # the bad JSON line is reported on stderr
    errors = {r["id"]: r["error"] for r in out if "error" in r}
    assert errors["bad"].startswith("thumbnail: cannot read image")
    assert errors["gone"].startswith("thumbnail: no such file")
    assert "no area" in errors["flat"]
    assert (tmp_path / "t" / output_relpath({"image_id": "c"})).exists()
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
    target = tmp_path / "t" / output_relpath(records[0])
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
    # 100,000 px asked OpenCV for 29 GB and failed every record
    result = subprocess.run(
        [sys.executable, "thumbnail.py", "--output_image_path", str(tmp_path), "--im_height", "100000"],
        capture_output=True,
        text=True,
        cwd=REPO,
        input="",
    )
    assert result.returncode == 2 and "must be at most 4096 pixels" in result.stderr


# ------------------------------------------------------------------ the stage end to end (issue 15)


def run_thumbnail(tmp_path, stdin: bytes, *extra):
    """thumbnail.py as a user runs it, under a strict UTF-8 locale with no PYTHONIOENCODING."""
    import os

    env = {key: value for key, value in os.environ.items() if key != "PYTHONIOENCODING"}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PYTHONUTF8="0")
    command = [sys.executable, "thumbnail.py", "--base_image_path", str(tmp_path)]
    command += ["--output_image_path", str(tmp_path / "t"), "--im_height", "16", "--im_width", "16"]
    command += ["--no_progress", *extra]
    result = subprocess.run(command, input=stdin, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()], result.stderr.decode()


def test_cli_reads_broken_framing_and_bytes(tmp_path):
    write_catalog(tmp_path)
    good = [{"id": "a", "image": "a.png"}, {"id": "b", "image": "b.jpg"}]
    lines = [json.dumps(r).encode() for r in good]
    deep = b"[" * 100_000 + b"]" * 100_000
    stdin = b"\xef\xbb\xbf[" + lines[0] + b"]\n" + deep + b"\n" + b'{"id": "\xe9t\xe9"}\n' + lines[1] + b"\n"
    out, stderr = run_thumbnail(tmp_path, stdin)
    assert [r["id"] for r in out] == ["a", "b"]
    assert all("error" not in r and os.path.exists(r["thumbnail"]) for r in out)
    assert "line 2" in stderr and "line 3" in stderr and "Traceback" not in stderr
    unclosed, stderr = run_thumbnail(tmp_path, b"[\n" + lines[0] + b",\n" + lines[1] + b",\n{")
    assert [r.get("id") for r in unclosed] == ["a", "b", None]
    assert "unread" in unclosed[2]["error"] and "unread" in stderr


def test_cli_gives_bad_boxes_an_error_and_keeps_every_other_record(tmp_path):
    write_catalog(tmp_path)
    texts = [
        "Infinity",
        "-Infinity",
        "NaN",
        "1e400",
        "5",
        "true",
        "null",
        '"0,0,5,5"',
        "[[0,0],[5,5]]",
        "[[0],[0],[5],[5]]",
        "[0,0,0,0]",
        "[5,5,-5,-5]",
        "[1,2,3]",
        '{"x": 1}',
    ]
    lines = [f'{{"id": "bad{i}", "image": "a.png", "box": {text}}}' for i, text in enumerate(texts)]
    lines.insert(3, '{"id": "good", "image": "a.png", "box": [20, 10, 50, 40]}')
    out, stderr = run_thumbnail(tmp_path, ("\n".join(lines) + "\n").encode())
    assert len(out) == len(lines) and "Traceback" not in stderr
    by_id = {r["id"]: r for r in out}
    assert "error" not in by_id["good"] and os.path.exists(by_id["good"]["thumbnail"])
    # null is "no box": the whole image
    assert "error" not in by_id[f"bad{texts.index('null')}"]
    failed = [r for r in out if "error" in r]
    assert len(failed) == len(texts) - 1
    # NaN and Infinity (1e400 reads as Infinity) are refused as input, the rest by the stage
    assert all(r["error"].startswith(("thumbnail: ", "input: ")) and "box" in r["error"] for r in failed)
    assert sum(r["error"].startswith("input: ") for r in failed) == 4


def test_cli_outputs_never_collide(tmp_path):
    # issue 15: an absolute path's id-made name met another record's own path; two crops of one image
    write_catalog(tmp_path)
    (tmp_path / "x").mkdir()
    Image.fromarray(square_image(colour=(0, 255, 0))).save(tmp_path / "x" / "good.png")
    Image.fromarray(square_image(colour=(0, 0, 255))).save(tmp_path / "photo-x.png")
    records = [
        {"id": "photo-x", "image": str(tmp_path / "x" / "good.png")},
        {"image": "photo-x.png"},
        {"id": "left", "image": "a.png", "box": [0, 0, 20, 60]},
        {"id": "square", "image": "a.png", "box": [20, 10, 50, 40]},
    ]
    out, _ = run_thumbnail(tmp_path, "".join(json.dumps(r) + "\n" for r in records).encode(), "--margin", "0")
    paths = [r["thumbnail"] for r in out]
    assert len(set(paths)) == 4
    colours = [load_image(path)[8, 8].tolist() for path in paths]
    assert colours[0][1] > 200 and colours[1][2] > 200  # green from x/good.png, blue from photo-x.png
    assert colours[2] == [255, 255, 255] and colours[3][0] > 150 and colours[3][1] < 60


def test_cli_refuses_absurd_strips_and_keeps_the_photos(tmp_path):
    # issue 15: a 661-byte 1x200000 PNG asked thumbnail.py for 112 GiB
    write_catalog(tmp_path)
    Image.new("L", (1, 200_000), 90).save(tmp_path / "strip.png")
    Image.new("RGB", (10_000, 1), (9, 9, 9)).save(tmp_path / "wide.png")
    assert (tmp_path / "strip.png").stat().st_size < 2000
    records = [{"id": "strip", "image": "strip.png"}, {"id": "a", "image": "a.png"}]
    records += [{"id": "wide", "image": "wide.png"}, {"id": "b", "image": "b.jpg"}]
    out, _ = run_thumbnail(tmp_path, "".join(json.dumps(r) + "\n" for r in records).encode())
    assert [r["id"] for r in out] == ["strip", "a", "wide", "b"]
    assert "aspect ratio" in out[0]["error"] and "aspect ratio" in out[2]["error"]
    assert "error" not in out[1] and "error" not in out[3]


def run_stage_script(script, tmp_path, output, records, *extra):
    command = [sys.executable, script, "--base_image_path", str(tmp_path), "--output_image_path", str(output)]
    stdin = "".join(json.dumps(r) + "\n" for r in records)
    command += ["--no_progress", *extra]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=REPO, timeout=300)
    return done, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize(
    ("script", "extra"),
    [
        ("thumbnail.py", ["--im_height", "16", "--im_width", "16"]),
        ("object_detection.py", ["--detector", "full"]),
        ("saliency.py", ["--edges", "canny"]),
    ],
)
def test_an_output_folder_that_cannot_be_written_stops_the_stage_with_exit_1_and_every_record(
    tmp_path, script, extra
):
    # the audit of 2026-12-04: every record got its own "File exists" error and the stage exited 0,
    # so run-training.sh went on and train.py replaced the catalog's store with an empty one
    records = write_catalog(tmp_path)[:3]
    (tmp_path / "t").write_text("a file where the output folder should be")
    done, out = run_stage_script(script, tmp_path, tmp_path / "t", records, *extra)
    assert done.returncode == 1, done.stderr
    assert len(out) == 3 and all("cannot write" in record["error"] for record in out)
    assert "stopped" in done.stderr


@pytest.mark.slow
def test_a_full_disk_stops_thumbnails_with_exit_1_and_keeps_every_record(small_disk, tmp_path):
    from conftest import fill

    write_catalog(tmp_path)
    big = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)  # PNGs that do not compress
    for i in range(12):
        Image.fromarray(big).save(tmp_path / f"n{i}.png")
    records = [{"id": f"n{i}", "image": f"n{i}.png"} for i in range(12)]
    fill(small_disk, 400 * 1024)
    done, out = run_stage_script("thumbnail.py", tmp_path, small_disk / "t", records, "--im_height", "128")
    assert done.returncode == 1 and len(out) == 12, done.stderr
    failed = [record for record in out if "error" in record]
    assert failed and all("No space left" in record["error"] for record in failed)
