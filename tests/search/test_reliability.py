"""Crashes, concurrent writers and a full disk never lose or mix up a catalog.

The crash test kills a writer (fusion.py's add and remove cores, under the folder lock) at every
point where it opens a file for writing or renames one, found with Python's audit hooks, so no
test hook lives in the product. After each kill the catalog must open, its index must agree with
its store, the state must be the old one or the new one complete, and a retry must finish.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, fill, synthetic_model

from simfusion.io.atomic import TEMP_PREFIX
from simfusion.io.lock import LockTimeout, write_lock
from simfusion.io.store import FeatureStore, store_path
from simfusion.search.build import index_path
from simfusion.search.catalog import Catalog
from simfusion.search.index import search
from simfusion.search.index_files import load_index

NEW = [f"new-{i}" for i in range(5)]

# Runs one writer; with KILL_AT=n it SIGKILLs itself at the n-th file write or rename, and it
# prints how many such points it passed (so the test knows how many to try).
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from simfusion.io.lock import write_lock
    from simfusion.io.store import FeatureStore, store_path
    from simfusion.search.build import add_catalog_items, remove_catalog_items, repair_index

    folder, op, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = [0]

    def hook(event, args):
        writes = event == "open" and (
            (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
            or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR))
        )
        if writes or event in ("os.rename", "os.replace", "os.remove", "os.unlink"):
            seen[0] += 1
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    with FeatureStore(store_path(folder)) as store:
        shapes = {view: store.shape(view)[1:] for view in store.views}
        held = set(store.record_ids())
    new = [f"new-{i}" for i in range(5)]
    sys.addaudithook(hook)
    with write_lock(folder):
        repair_index(folder)  # as Catalog.add and .remove do first
        if op == "add":
            todo = [key for key in new if key not in held]  # as Catalog.add: a retry skips what is held
            rng = np.random.default_rng(1)
            maps = {v: rng.standard_normal((len(todo), *s)).astype(np.float32) for v, s in shapes.items()}
            if todo:
                add_catalog_items(folder, [{"id": key, "image": key + ".jpg"} for key in todo], maps)
        elif op == "rebuild":  # fusion.py's build: a fresh index (generation 0 in memory) over a live one
            from simfusion.search.build import build_catalog_index, index_path
            from simfusion.search.index_files import save_index

            save_index(build_catalog_index(store_path(folder), whiten=True), index_path(folder))
        else:
            remove_catalog_items(folder, ["item-001", "item-002"])
    print(seen[0])
    """
)


def run_writer(folder, op, kill_at=0):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": REPO}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(folder), op, str(kill_at)], capture_output=True, text=True, env=env
    )
    return done


def store_ids(folder):
    with FeatureStore(store_path(folder)) as store:
        return store.record_ids()


def check_consistent(folder, states):
    """The catalog opens, its (reconciled) index equals its store, which is one of `states`."""
    ids = set(store_ids(folder))
    assert ids in states
    catalog = Catalog.open(folder)
    assert set(catalog.index.ids) == ids and len(catalog) == len(ids)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["add", "remove"])
def test_a_writer_killed_at_any_write_loses_nothing_and_a_retry_finishes(tmp_path, op):
    pristine = tmp_path / "pristine"
    ids, _, _ = synthetic_model(pristine, n=30)
    before = set(ids)
    after = before | set(NEW) if op == "add" else before - {"item-001", "item-002"}
    clean = run_writer(shutil.copytree(pristine, tmp_path / "clean"), op)
    assert clean.returncode == 0, clean.stderr
    points = int(clean.stdout.split()[-1])
    assert points >= 6  # temp files, renames and deletions of the store and the index
    for kill_at in range(1, points + 1):
        folder = shutil.copytree(pristine, tmp_path / f"kill-{kill_at}")
        killed = run_writer(folder, op, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        assert os.path.exists(os.path.join(index_path(folder), "index.json")), kill_at
        check_consistent(folder, [before, after])
        retry = run_writer(folder, op)
        assert retry.returncode == 0, (kill_at, retry.stderr)
        check_consistent(folder, [after])
        # the writer saved the repaired index: on disk it agrees with the store, nothing left over
        assert set(load_index(index_path(folder)).ids) == after
        leftovers = [n for _, _, files in os.walk(folder) for n in files if n.startswith(TEMP_PREFIX)]
        assert not leftovers, (kill_at, leftovers)


def live_files(folder):
    """The bytes of every file the committed index.json names, by name."""
    meta = json.load(open(os.path.join(folder, "index.json")))
    names = [meta["params"], *meta["parts"].values()]
    return meta["generation"], {name: open(os.path.join(folder, name), "rb").read() for name in names}


@pytest.mark.slow
def test_a_rebuild_killed_at_any_write_never_touches_the_live_index(tmp_path):
    pristine = tmp_path / "pristine"
    synthetic_model(pristine, n=30)
    generation, before = live_files(index_path(pristine))
    clean = run_writer(shutil.copytree(pristine, tmp_path / "clean"), "rebuild")
    assert clean.returncode == 0, clean.stderr
    new_generation, after = live_files(index_path(tmp_path / "clean"))
    assert new_generation == generation + 1 and not set(after) & set(before)
    points = int(clean.stdout.split()[-1])
    for kill_at in range(1, points + 1):
        folder = shutil.copytree(pristine, tmp_path / f"kill-{kill_at}")
        killed = run_writer(folder, "rebuild", kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        state = live_files(index_path(folder))
        assert state in [(generation, before), (new_generation, after)], kill_at
        catalog = Catalog.open(folder)
        [answer] = catalog.search_ids(["item-000"], k=3)
        assert len(answer["results"]) == 3
        assert run_writer(folder, "rebuild").returncode == 0  # the retry finishes over what was left
        assert live_files(index_path(folder))[0] > state[0] and len(Catalog.open(folder)) == 30


# fusion.py's rebuild, where a remove (or REPLACE: a remove, then an add of the same id with other
# features) lands between the build's read of the store and its save, as a concurrent writer would
RACED_REBUILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from simfusion.cli.index import main
    from simfusion.io.lock import LOCK_FILE
    from simfusion.search.build import add_catalog_items, remove_catalog_items

    folder, change = sys.argv[1], sys.argv[2]
    done = [False]

    def hook(event, args):  # the first open of the lock file is the save's
        if event == "open" and not done[0] and str(args[0]).endswith(LOCK_FILE):
            done[0] = True
            remove_catalog_items(folder, ["item-001"])
            if change == "replace":
                from simfusion.io.store import FeatureStore, store_path

                with FeatureStore(store_path(folder)) as store:
                    shapes = {view: store.shape(view)[1:] for view in store.views}
                rng = np.random.default_rng(5)
                maps = {v: rng.standard_normal((1, *s)).astype(np.float32) for v, s in shapes.items()}
                add_catalog_items(folder, [{"id": "item-001", "image": "other.jpg"}], maps)

    sys.addaudithook(hook)
    sys.exit(main(["--model_save_path", folder, "--no_tune"]))
    """
)


@pytest.mark.parametrize("change", ["remove", "replace"])
def test_a_rebuild_that_the_store_changed_under_is_built_again_from_the_new_store(tmp_path, change):
    synthetic_model(tmp_path, n=12)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": REPO}
    done = subprocess.run(
        [sys.executable, "-c", RACED_REBUILD, str(tmp_path), change], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "the catalog changed while its index was built" in done.stderr
    catalog = Catalog.open(tmp_path)
    assert set(catalog.index.ids) == set(store_ids(tmp_path))
    assert ("item-001" in catalog.index.ids) == (change == "replace")
    if change == "replace":  # the index holds the new features, not the removed item's
        with FeatureStore(store_path(tmp_path)) as store:
            maps = {view: store.features(view, store.rows(view, ["item-001"])) for view in store.views}
        [hit] = search(catalog.index, catalog.vectors(maps), k=1)
        assert hit[0]["id"] == "item-001" and hit[0]["score"] > 0.999


@pytest.mark.slow
def test_concurrent_writers_serialise_and_searchers_see_whole_states(tmp_path):
    ids, _, _ = synthetic_model(tmp_path, n=30)
    writers = []
    for number in range(3):
        script = WRITER.replace('f"new-{i}"', f'f"w{number}-{{i}}"')
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": REPO}
        writers.append(
            subprocess.Popen(
                [sys.executable, "-c", script, str(tmp_path), "add", "0"],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    seen = set()
    while any(writer.poll() is None for writer in writers):
        catalog = Catalog.open(tmp_path)  # a searcher: always a whole state, never an error
        seen.add(len(catalog))
        [answer] = catalog.search_ids([ids[0]], k=3)
        assert len(answer["results"]) == 3
        time.sleep(0.01)
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read()
    final = set(store_ids(tmp_path))
    assert final == set(ids) | {f"w{n}-{i}" for n in range(3) for i in range(5)}
    assert set(load_index(index_path(tmp_path)).ids) == final
    assert seen <= {30, 35, 40, 45}


def test_a_second_writer_waits_then_fails_clearly(tmp_path):
    with write_lock(tmp_path):
        with pytest.raises(LockTimeout, match="another process is changing"):
            with write_lock(tmp_path, timeout=0.2):
                pass
    with write_lock(tmp_path, timeout=0.2):  # released: the next writer gets it at once
        pass


def test_a_lock_holder_that_dies_releases_the_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from simfusion.io.lock import write_lock\n"
            "with write_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with write_lock(tmp_path, timeout=5):
        pass


def test_leftovers_of_interrupted_writes_are_removed_by_the_next_writer(tmp_path):
    synthetic_model(tmp_path, n=10)
    for path in (
        tmp_path / ".tmp-abc.h5",
        tmp_path / "index" / ".tmp-x.faiss",
        tmp_path / "index" / "part-9.g7.faiss",
    ):
        path.write_bytes(b"half")
    (tmp_path / ".old-index-123").mkdir()
    Catalog.open(tmp_path).remove(["item-003"])
    left = sorted(
        n for _, dirs, files in os.walk(tmp_path) for n in files + dirs if n.startswith((".tmp", ".old"))
    )
    assert left == [] and not (tmp_path / "index" / "part-9.g7.faiss").exists()


def test_an_index_behind_its_store_is_repaired_not_trusted(tmp_path):
    ids, records, views = synthetic_model(tmp_path, n=20)
    stale = load_index(index_path(tmp_path))
    Catalog.open(tmp_path).remove([ids[0]])
    from simfusion.search.index_files import save_index

    save_index(stale, index_path(tmp_path))  # as if the remove died after committing the store
    catalog = Catalog.open(tmp_path)
    assert ids[0] not in catalog and len(catalog) == 19
    assert catalog.remove([ids[0]])["removed"] == 1  # the retry counts what the crash left undone


def test_corrupt_index_files_give_clear_errors(tmp_path):
    from simfusion.search.index import IndexFileError

    synthetic_model(tmp_path, n=10)
    folder = index_path(tmp_path)
    meta = json.load(open(os.path.join(folder, "index.json")))
    for name in [meta["params"], *meta["parts"].values()]:
        good = open(os.path.join(folder, name), "rb").read()
        open(os.path.join(folder, name), "wb").write(good[: len(good) // 3])
        with pytest.raises(IndexFileError, match="rebuild the index with fusion.py"):
            Catalog.open(tmp_path)
        open(os.path.join(folder, name), "wb").write(good)
    Catalog.open(tmp_path)


def test_a_full_disk_refuses_the_write_clearly_and_keeps_the_catalog(small_disk):
    folder = small_disk / "model"
    ids, _, _ = synthetic_model(folder, n=40)
    fill(small_disk, 400 * 1024)
    done = run_writer(folder, "add")
    assert done.returncode == 1 and "not enough disk space" in done.stderr and "Traceback" in done.stderr
    check_consistent(folder, [set(ids)])
    os.unlink(small_disk / "filler")
    assert run_writer(folder, "add").returncode == 0
    check_consistent(folder, [set(ids) | set(NEW)])


def test_a_rebuild_on_a_full_disk_fails_clearly_and_keeps_the_index(small_disk):
    folder = small_disk / "model"
    ids, _, _ = synthetic_model(folder, n=40)
    generation, before = live_files(index_path(folder))
    fill(small_disk, 4 * 1024)
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "fusion.py"), "--model_save_path", str(folder), "--no_tune"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "disk space" in done.stderr or "disk is full" in done.stderr
    assert live_files(index_path(folder)) == (generation, before)
    assert sorted(os.listdir(index_path(folder))) == sorted(["index.json", *before])  # no orphans
    check_consistent(folder, [set(ids)])


def test_a_save_that_fills_the_disk_removes_what_it_wrote(small_disk, tmp_path):
    from simfusion.search.build import build_catalog_index
    from simfusion.search.index_files import save_index

    synthetic_model(tmp_path / "model", n=400)
    index = build_catalog_index(store_path(tmp_path / "model"))
    target = small_disk / "index"  # no live index there, so the save cannot check the space first
    target.mkdir()
    fill(small_disk, 8 * 1024)
    with pytest.raises(OSError, match="disk"):
        save_index(index, target)
    assert os.listdir(target) == []
