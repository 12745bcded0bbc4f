import zlib

import numpy as np
import pytest

from simfusion.io.shards import (
    SHARD_FOLDER,
    build_store,
    merge_shards,
    missing_shards,
    write_shards,
)
from simfusion.io.stage import StageCore
from simfusion.io.store import FeatureStore, write_store

ATTRS = {"model": "thumbnail.keras", "input_size": [8, 8, 3], "kind": "autoencoder"}


def fake_encode(records, *, fail_on=None):
    """Seeded (2, 2, 3) maps per record, from its id: the same whoever encodes it, whenever."""
    ids = [record["id"] for record in records]
    if fail_on in ids:
        raise RuntimeError(f"encoder crashed on {fail_on}")
    maps = np.stack([np.random.default_rng(zlib.crc32(key.encode())).random((2, 2, 3)) for key in ids])
    return {"thumbnail": (ids, maps.astype(np.float32), ATTRS), "edges": (ids, maps[..., :1] * 2, ATTRS)}


def catalog(n=25):
    return [{"id": f"item-{i:03d}", "image": f"{i}.png", "price": i} for i in range(n)]


def contents(path):
    with FeatureStore(path) as store:
        own = ("created", "package_version")
        return {
            "root": {k: v for k, v in store.attrs().items() if k not in own},
            "records": store.records(),
            "views": {
                view: (
                    store.ids(view),
                    store.features(view).tolist(),
                    {k: v for k, v in store.attrs(view).items() if k not in own},
                )
                for view in store.views
            },
        }


def test_merged_shards_equal_a_single_writer_store(tmp_path):
    records = catalog()
    merged = build_store(
        records, tmp_path, StageCore(fake_encode), target=tmp_path / "features.h5", shard_size=10
    )
    single = write_store(
        tmp_path / "single.h5", catalog_records=records, views=fake_encode(records), attrs=None
    )
    assert contents(merged) == contents(single)
    assert contents(merged)["views"]["thumbnail"][0] == [r["id"] for r in records]
    assert not (tmp_path / SHARD_FOLDER).exists()


def test_a_failed_run_resumes_with_only_the_missing_shards(tmp_path):
    records = catalog()
    with pytest.raises(RuntimeError, match="crashed on item-021"):
        write_shards(records, tmp_path, StageCore(fake_encode, {"fail_on": "item-021"}), shard_size=10)
    assert missing_shards(tmp_path, 3) == [2]
    # a shard lost since (a disk cleaned up) is redone too; a finished one is left alone
    (tmp_path / SHARD_FOLDER / "features-00000.h5").unlink()
    kept = (tmp_path / SHARD_FOLDER / "features-00001.h5").stat()
    assert write_shards(records, tmp_path, StageCore(fake_encode), shard_size=10) == [0, 2]
    again = (tmp_path / SHARD_FOLDER / "features-00001.h5").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert write_shards(records, tmp_path, StageCore(fake_encode), shard_size=10) == []
    merged = merge_shards(tmp_path, 3, tmp_path / "features.h5")
    single = write_store(tmp_path / "single.h5", catalog_records=records, views=fake_encode(records))
    assert contents(merged) == contents(single)


def test_merge_refuses_missing_shards(tmp_path):
    write_shards(catalog(15), tmp_path, StageCore(fake_encode), shard_size=10)
    (tmp_path / SHARD_FOLDER / "features-00001.h5").unlink()
    with pytest.raises(FileNotFoundError, match="1 shard.*missing"):
        merge_shards(tmp_path, 2, tmp_path / "features.h5")
    assert not (tmp_path / "features.h5").exists()


@pytest.mark.slow
def test_ray_workers_write_the_same_shards(tmp_path):
    import sys

    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from simfusion.io.distribute import start_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # fake_encode lives here
    start_ray(None, num_cpus=2)
    try:
        records = catalog()
        merged = build_store(
            records,
            tmp_path / "ray",
            StageCore(fake_encode),
            target=tmp_path / "ray.h5",
            shard_size=10,
            distributor="ray",
        )
    finally:
        ray.shutdown()
    single = write_store(tmp_path / "single.h5", catalog_records=records, views=fake_encode(records))
    assert contents(merged) == contents(single)
