"""train.py killed at any point of a retrain leaves a catalog that is the old one or the new one.

Like the index writers' crash test (tests/search/test_reliability.py), the kill comes from
Python's audit hooks at every point where train.py, from Python, opens a file for writing, renames
or removes one, so no test hook lives in the product. HDF5 writes its file from C, unseen: those
writes fall between two such points (the store's temporary file is opened, written, then renamed).
After each kill the store and training.json must name one training run, the store must hold the
old records or the new ones, the index must agree with the store or refuse clearly, and train.py
run again must finish.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import REPO

from simfusion.io.atomic import TEMP_PREFIX
from simfusion.io.images import save_image
from simfusion.io.records import output_relpath
from simfusion.io.store import FeatureStore, store_path
from simfusion.learn.encoders import NEXT_TRAINING_JSON
from simfusion.search.build import build_catalog_index, check_training_run, index_path
from simfusion.search.catalog import Catalog
from simfusion.search.index_files import IndexFileError, save_index

# Runs train.py; with KILL_AT=n it SIGKILLs itself at the n-th file write, rename or removal, and
# it writes how many such points it passed to COUNT (stdout is train.py's records).
TRAINER = textwrap.dedent(
    """
    import atexit, os, runpy, signal, sys

    kill_at, count, script, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    seen = [0]

    def hook(event, args):
        writes = event == "open" and (
            (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
            or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR))
        )
        if writes and isinstance(args[0], str) and args[0] == count:
            return
        if writes or event in ("os.rename", "os.replace", "os.remove", "os.unlink"):
            seen[0] += 1
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    def report():
        with open(count, "w") as out:
            out.write(str(seen[0]))

    atexit.register(report)
    sys.argv = [script, *argv]
    sys.addaudithook(hook)
    runpy.run_path(script, run_name="__main__")
    """
)


def write_views(folder, n):
    """n seeded thumbnails as thumbnail.py lays them out; returns their records."""
    rng = np.random.default_rng(3)
    records = []
    for i in range(n):
        image = np.full((32, 32, 3), rng.integers(0, 256, 3), np.uint8)
        x0, y0 = rng.integers(0, 16, 2)
        image[y0 : y0 + 12, x0 : x0 + 12] = rng.integers(0, 256, 3)
        record = {"id": f"img{i:02d}", "image": f"items/img{i:02d}.png"}
        save_image(folder / "thumbnail" / output_relpath(record), image)
        records.append(record)
    return records


def run_train(views, model, records, kill_at=0):
    count = model.parent / f"{model.name}.count"
    count.unlink(missing_ok=True)
    argv = ["--base_image_path_for_model", str(views), "--model_save_path", str(model)]
    argv += ["--views", "hog,tiny", "--no_progress", "--im_height", "32", "--im_width", "32"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": REPO}
    done = subprocess.run(
        [sys.executable, "-c", TRAINER, str(kill_at), str(count), os.path.join(REPO, "train.py"), *argv],
        input="".join(json.dumps(r) + "\n" for r in records),
        capture_output=True,
        text=True,
        env=env,
    )
    points = int(count.read_text()) if count.exists() else None
    return done, points


def store_state(model):
    """(record ids, the run the store is marked with) after the reader's check of training.json."""
    with FeatureStore(store_path(model)) as store:
        check_training_run(model, store)
        return store.record_ids(), store.attrs().get("run")


@pytest.mark.slow
def test_a_retrain_killed_at_any_write_is_the_old_catalog_or_the_new_and_a_rerun_finishes(tmp_path):
    views, pristine = tmp_path / "views", tmp_path / "pristine"
    records = write_views(views, 12)
    old_records, new_records = records[:10], records[2:]  # the retrain drops two items, adds two
    done, _ = run_train(views, pristine, old_records)
    assert done.returncode == 0, done.stderr
    save_index(build_catalog_index(store_path(pristine)), index_path(pristine))
    old_ids = store_state(pristine)[0]

    reference = shutil.copytree(pristine, tmp_path / "reference")
    done, points = run_train(views, reference, new_records)
    assert done.returncode == 0, done.stderr
    new_ids = store_state(reference)[0]
    assert set(old_ids) != set(new_ids) and points >= 4  # the lock, training.next.json, the store, its rename

    def kill_and_rerun(kill_at):
        model = shutil.copytree(pristine, tmp_path / f"kill-{kill_at}")
        killed, _ = run_train(views, model, new_records, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        ids, run = store_state(model)  # raises if training.json and the store name different runs
        assert ids in (old_ids, new_ids), kill_at
        assert json.loads((model / "training.json").read_text())["run"] == run, kill_at
        try:
            catalog = Catalog.open(model)
        except IndexFileError as exc:  # the store moved on past the index: it says so
            assert "rebuild" in str(exc) and "fusion.py" in str(exc), (kill_at, exc)
        else:
            assert set(catalog.index.ids) == set(ids), kill_at

        rerun, _ = run_train(views, model, new_records)
        assert rerun.returncode == 0, (kill_at, rerun.stderr)
        assert len(rerun.stdout.splitlines()) == len(new_records)
        assert store_state(model)[0] == new_ids, kill_at
        leftovers = [name for name in os.listdir(model) if name.startswith(TEMP_PREFIX)]
        assert not leftovers and not (model / NEXT_TRAINING_JSON).exists(), (kill_at, leftovers)
        return ids == new_ids

    with ThreadPoolExecutor(2) as pool:  # each run is a process of its own, on a copy of its own
        moved_on = list(pool.map(kill_and_rerun, range(1, points + 1)))
    # the kills fell on both sides of the commit: early ones keep the old catalog, late ones the new
    assert not moved_on[0] and moved_on[-1] and moved_on == sorted(moved_on), moved_on
