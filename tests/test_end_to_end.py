"""Both shell wrappers on a slice of the shipped sample catalog, with tiny settings."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import pytest
from conftest import REPO, SAMPLE_DATA


def sample_slice():
    """Three photos, two products of each of four classes, and both broken records."""
    with open(os.path.join(SAMPLE_DATA, "catalog.jsonl"), encoding="utf-8") as stream:
        records = [json.loads(line) for line in stream]
    photos = [r for r in records if r["id"].startswith("photo-")][:3]
    fashion = []
    for category in ("sneaker", "trouser", "bag", "dress"):
        fashion += [r for r in records if r.get("category") == category and r["id"].startswith("fmnist")][:2]
    broken = [r for r in records if r["id"].startswith("broken-")]
    return photos + fashion + broken


@pytest.mark.slow
def test_training_then_prediction_on_the_sample_catalog(tmp_path):
    data = tmp_path / "data"
    records = sample_slice()
    for record in records:
        source = os.path.join(SAMPLE_DATA, record["image"])
        if os.path.exists(source):
            os.makedirs(data / os.path.dirname(record["image"]), exist_ok=True)
            shutil.copy(source, data / record["image"])
    (data / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "IM_HEIGHT": "32",
        "IM_WIDTH": "32",
        "EPOCHS": "1",
        "EDGES": "canny",
        # trained and saliency-stage views too (the default views are all computed from the thumbnail)
        "VIEWS": "thumbnail,edges,hed_vgg16",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }

    subprocess.run(
        ["./run-training.sh", str(data / "catalog.jsonl"), str(out)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )

    trained = [json.loads(line) for line in (out / "trained.jsonl").read_text().splitlines()]
    assert [r["id"] for r in trained] == [r["id"] for r in records]  # every record accounted for, in order
    errors = {r["id"]: r["error"] for r in trained if "error" in r}
    assert set(errors) == {"broken-truncated", "broken-missing"}
    assert all(e.startswith("object_detection:") for e in errors.values())
    good = [r for r in trained if "error" not in r]
    assert all(len(r["box"]) == 4 and r["detections"] for r in good)
    with h5py.File(out / "model" / "features.h5", "r") as store:
        views = set(store["views"])
        assert {"thumbnail", "edges", "hed_vgg16"} <= views and len(views) >= 3
        for view in views:
            assert len(store["views"][view]["ids"]) == len(store["views"][view]["features"]) == len(good)
    assert (out / "model" / "thumbnail.loss.png").exists()

    # a catalog image finds itself first
    query = data / "fashion" / "bag" / os.path.basename(records[7]["image"])
    result = subprocess.run(
        ["./run-prediction.sh", str(query), str(out)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    (line,) = result.stdout.splitlines()
    prediction = json.loads(line)
    assert prediction["results"][0]["id"] == records[7]["id"]
    assert prediction["results"][0]["category"] == "bag"
    assert set(prediction["results"][0]["scores"]) == views
    assert (out / "recommendations.png").exists()

    # an unreadable query: an error record and a non-zero exit
    bad = subprocess.run(
        ["./run-prediction.sh", str(data / "nothing.jpg"), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "error" in json.loads(bad.stdout.splitlines()[0])
