"""The HDF5 feature store: row alignment, attributes, atomic writes, incremental updates, versions."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from simfusion import __version__
from simfusion.io.store import (
    FORMAT,
    FORMAT_VERSION,
    FeatureStore,
    StoreFormatError,
    StoreWriter,
    write_store,
)
from simfusion.io.store_edit import append_items, append_rows, remove_ids

IDS = ["a", "b", "c", "d", "e"]


def records():
    return [
        {"id": key, "category": "shoe" if i % 2 else "bag", "price": 10.0 + i} for i, key in enumerate(IDS)
    ]


def maps(rng, n=5, shape=(2, 2, 3)):
    return rng.standard_normal((n, *shape)).astype(np.float32)


def make_store(path, rng):
    thumb, edges = maps(rng), maps(rng, shape=(1, 1, 4))
    write_store(
        path,
        catalog_records=records(),
        views={
            "thumbnail": (
                IDS,
                thumb,
                {"model": "thumbnail.keras", "kind": "autoencoder", "objective": "plain"},
            ),
            "edges": (IDS, edges, {"model": "edges.keras", "kind": "autoencoder", "objective": "plain"}),
        },
        attrs={"input_size": [32, 32, 3]},
    )
    return thumb, edges


def files_in(folder):
    return sorted(os.listdir(folder))


def test_ids_features_and_records_are_row_aligned(tmp_path, rng):
    path = tmp_path / "features.h5"
    thumb, edges = make_store(path, rng)
    with FeatureStore(path) as store:
        assert sorted(store.views) == ["edges", "thumbnail"]
        assert store.ids("thumbnail") == IDS
        assert store.shape("edges") == (5, 1, 1, 4)
        np.testing.assert_array_equal(store.features("thumbnail"), thumb)
        assert store.features("edges").dtype == np.float32
        # rows in any order, repeats allowed, come back in the asked order
        np.testing.assert_array_equal(store.features("thumbnail", [3, 0, 3]), thumb[[3, 0, 3]])
        np.testing.assert_array_equal(store.features("edges", store.rows("edges", ["e", "b"])), edges[[4, 1]])
        assert store.records() == records()
        assert store.record_ids() == IDS
        batches = list(store.batches("thumbnail", batch_size=2))
        assert [ids for ids, _ in batches] == [["a", "b"], ["c", "d"], ["e"]]
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in batches]), thumb)
        with pytest.raises(KeyError, match="no view 'saliency'"):
            store.ids("saliency")


def test_attributes_say_what_produced_the_features(tmp_path, rng):
    path = tmp_path / "features.h5"
    make_store(path, rng)
    with FeatureStore(path) as store:
        root = store.attrs()
        assert root["format"] == FORMAT and root["format_version"] == FORMAT_VERSION
        assert root["package_version"] == __version__
        assert root["input_size"] == [32, 32, 3]
        assert root["created"][:4].isdigit()
        view = store.attrs("thumbnail")
        assert view["model"] == "thumbnail.keras" and view["kind"] == "autoencoder"
        assert view["package_version"] == __version__ and "created" in view
        # chunks hold a few rows, so one candidate's row is read alone
        assert store.dataset("thumbnail").chunks[0] <= 8


def test_streaming_writer_appends_batch_by_batch(tmp_path, rng):
    path = tmp_path / "features.h5"
    data = maps(rng, n=5)
    with StoreWriter(
        path, attrs={"input_size": [8, 8, 1]}, catalog_records=records(), compression="lzf"
    ) as out:
        out.add_view("thumbnail", {"model": "m.keras"}, (2, 2, 3))
        for start in range(0, 5, 2):
            out.append("thumbnail", IDS[start : start + 2], data[start : start + 2])
        assert not path.exists()  # nothing at the final path before the commit
    with FeatureStore(path) as store:
        assert store.ids("thumbnail") == IDS
        np.testing.assert_array_equal(store.features("thumbnail"), data)
    assert files_in(tmp_path) == ["features.h5"]


def test_writer_rejects_misaligned_or_repeated_rows(tmp_path, rng):
    with pytest.raises(ValueError, match="row-aligned"):
        with StoreWriter(tmp_path / "f.h5") as out:
            out.add_view("v", {}, (2, 2, 3))
            out.append("v", ["a", "b"], maps(rng, n=3))
    with pytest.raises(ValueError, match="already holds id 'a'"):
        with StoreWriter(tmp_path / "f.h5") as out:
            out.add_view("v", {}, (2, 2, 3))
            out.append("v", ["a"], maps(rng, n=1))
            out.append("v", ["a"], maps(rng, n=1))
    with pytest.raises(ValueError, match="not in the catalog"):
        write_store(tmp_path / "f.h5", catalog_records=records()[:2], views={"v": (IDS, maps(rng), {})})
    assert files_in(tmp_path) == []


def test_crash_mid_write_leaves_the_old_store_and_no_temporary_file(tmp_path, rng):
    path = tmp_path / "features.h5"
    thumb, _ = make_store(path, rng)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk on fire"):
        with StoreWriter(path, catalog_records=records()) as out:
            out.add_view("thumbnail", {}, (2, 2, 3))
            out.append("thumbnail", IDS[:2], maps(rng, n=2))
            raise RuntimeError("disk on fire")
    assert files_in(tmp_path) == ["features.h5"]
    assert path.read_bytes() == before
    with FeatureStore(path) as store:
        np.testing.assert_array_equal(store.features("thumbnail"), thumb)


def test_crash_mid_write_of_a_new_store_leaves_nothing(tmp_path, rng):
    class Exploding:
        """Feature rows that fail half-way through being read, like an encoder crashing."""

        shape = (5, 2, 2, 3)

        def __array__(self, dtype=None, copy=None):
            raise MemoryError("out of memory half-way")

    with pytest.raises(MemoryError):
        write_store(
            tmp_path / "features.h5",
            catalog_records=records(),
            views={"ok": (IDS, maps(rng), {}), "bad": (IDS, Exploding(), {})},
        )
    assert files_in(tmp_path) == []


def test_append_rows_and_remove_ids(tmp_path, rng):
    path = tmp_path / "features.h5"
    thumb, edges = make_store(path, rng)
    new = maps(rng, n=2)
    append_rows(path, "thumbnail", ["f", "g"], new, records=[{"id": "f", "category": "hat", "price": 3}])
    with FeatureStore(path) as store:
        assert store.ids("thumbnail") == IDS + ["f", "g"]
        np.testing.assert_array_equal(store.features("thumbnail", [5, 6]), new)
        assert store.ids("edges") == IDS
        catalog = store.records()
        assert catalog[5] == {"id": "f", "category": "hat", "price": 3}
        assert catalog[6] == {"id": "g"}  # every view id has a catalog record
        assert "modified" in store.attrs()
    with pytest.raises(ValueError, match="already holds id 'a'"):
        append_rows(path, "thumbnail", ["a"], maps(rng, n=1))
    with pytest.raises(ValueError, match="do not fit"):
        append_rows(path, "edges", ["z"], maps(rng, n=1))

    assert remove_ids(path, ["b", "f", "nope"]) == 2
    with FeatureStore(path) as store:
        assert store.ids("thumbnail") == ["a", "c", "d", "e", "g"]
        assert store.ids("edges") == ["a", "c", "d", "e"]
        np.testing.assert_array_equal(store.features("edges"), edges[[0, 2, 3, 4]])
        np.testing.assert_array_equal(store.features("thumbnail", [4]), new[[1]])
        assert [r["id"] for r in store.records()] == ["a", "c", "d", "e", "g"]
        assert store.attrs("thumbnail")["model"] == "thumbnail.keras"
        assert store.dataset("thumbnail").compression == "gzip"
    assert files_in(tmp_path) == ["features.h5"]


def test_append_items_is_one_atomic_update(tmp_path, rng):
    path = tmp_path / "features.h5"
    make_store(path, rng)
    before = path.read_bytes()
    # the second view's rows do not fit: the first view's rows must not stay either
    with pytest.raises(ValueError, match="do not fit"):
        append_items(
            path,
            views={"thumbnail": (["x"], maps(rng, n=1)), "edges": (["x"], maps(rng, n=1))},
            records=[{"id": "x"}],
        )
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["features.h5"]
    append_items(
        path,
        views={"thumbnail": (["x"], maps(rng, n=1)), "edges": (["x"], maps(rng, n=1, shape=(1, 1, 4)))},
        records=[{"id": "x", "category": "bag"}],
    )
    with FeatureStore(path) as store:
        assert store.ids("thumbnail")[-1] == store.ids("edges")[-1] == "x"
        assert store.records()[-1] == {"id": "x", "category": "bag"}


def test_a_store_of_another_format_version_is_refused_clearly(tmp_path, rng):
    path = tmp_path / "features.h5"
    make_store(path, rng)
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StoreFormatError, match="format version 2.*reads version 1.*Rebuild it"):
        FeatureStore(path)
    with FeatureStore(path, check=False) as store:
        with pytest.raises(StoreFormatError):
            store.check_version()
    with pytest.raises(StoreFormatError):
        append_rows(path, "thumbnail", ["z"], maps(rng, n=1))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(StoreFormatError, match="not a simfusion feature store"):
        FeatureStore(other)
    with pytest.raises(FileNotFoundError, match="run train.py"):
        FeatureStore(tmp_path / "missing.h5")


def test_iter_records_reads_lazily_in_catalog_order(tmp_path):
    records = [{"id": f"r{i}", "n": i} for i in range(7)]
    path = write_store(tmp_path / "s.h5", catalog_records=records, views={}, compression=None)
    with FeatureStore(path) as store:
        assert list(store.iter_records(batch_size=3)) == records == store.records()
        first = next(store.iter_records(batch_size=2))
        assert first == records[0]
