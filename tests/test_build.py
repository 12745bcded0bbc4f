import io
import json

import numpy as np
import pytest

from simfusion.cli.index import main, read_ids
from simfusion.io.store import FeatureStore, store_path, write_store
from simfusion.search.build import build_catalog_index, check_store, index_path
from simfusion.search.index import IndexFileError, load_index, search
from simfusion.search.vectors import transform

CATEGORIES = ("sneaker", "sandal", "bag")


def synthetic_store(folder, n=40, *, seed=0, created="2026-01-01T00:00:00+00:00"):
    """A seeded store in the agreed layout: two views of (n, 2, 2, c) maps clustered by category."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(CATEGORIES), size=n)
    centres = {"thumbnail": rng.standard_normal((3, 2, 2, 8)), "edges": rng.standard_normal((3, 2, 2, 4))}
    ids = [f"item-{i:03d}" for i in range(n)]
    records = [
        {"id": key, "image": f"{key}.jpg", "category": CATEGORIES[c], "brand": "acme" if i % 2 else "zeta"}
        for i, (key, c) in enumerate(zip(ids, labels, strict=True))
    ]
    views = {}
    for view, centre in centres.items():
        maps = (centre[labels] + 0.3 * rng.standard_normal((n, *centre.shape[1:]))).astype(np.float32)
        attrs = {
            "model": f"{view}.keras",
            "input_size": [32, 32, 3],
            "kind": "autoencoder",
            "objective": "plain",
            "created": created,
        }
        views[view] = (ids, maps, attrs)
    folder.mkdir(parents=True, exist_ok=True)
    write_store(store_path(folder), catalog_records=records, views=views, compression=None)
    return ids, records, views


@pytest.fixture
def run(capsys, caplog, monkeypatch):
    """Run fusion.py's main: (exit code, JSON lines of stdout, stderr and log text)."""

    def call(argv, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        caplog.clear()
        code = main(argv)
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines() if line.strip()], err + caplog.text

    return call


def test_build_from_store_and_every_item_ranks_itself_first(tmp_path):
    ids, _, views = synthetic_store(tmp_path)
    index = build_catalog_index(store_path(tmp_path), whiten=True, fusion="late")
    assert len(index) == 40 and sorted(index.views) == ["edges", "thumbnail"]
    queries = transform({view: maps for view, (_, maps, _) in views.items()}, index.params)
    for key, hits in zip(ids, search(index, queries, k=3), strict=True):
        assert hits[0]["id"] == key


def test_cli_build_remove_and_summary(tmp_path, run, capsys):
    synthetic_store(tmp_path)
    code, out, _ = run(
        [
            "--model_save_path",
            str(tmp_path),
            "--views",
            "thumbnail,edges",
            "--weights",
            "edges=0.5",
            "--fusion",
            "rrf",
            "--binary",
        ]
    )
    assert code == 0
    assert out[0]["items"] == 40 and out[0]["kind"] == "binary" and out[0]["fusion"] == "rrf"
    assert out[0]["weights"] == {"thumbnail": 1.0, "edges": 0.5}
    code, out, _ = run(
        ["--model_save_path", str(tmp_path), "--remove"],
        'item-001\n{"id": "item-002"}\nnope\n',
    )
    assert code == 0
    assert (
        out[0]["ids"] == ["item-001", "item-002"] and out[0]["missing"] == ["nope"] and out[0]["items"] == 38
    )
    with FeatureStore(store_path(tmp_path)) as store:
        assert "item-001" not in store.record_ids() and "item-002" not in store.ids("edges")
        check_store(load_index(index_path(tmp_path)), store)  # removing keeps the index in step
    code, out, _ = run(
        ["--model_save_path", str(tmp_path), "--remove", "item-003,item-004"],
    )
    assert out[0]["removed"] == 2 and len(load_index(index_path(tmp_path))) == 36


def test_cli_errors_are_clear(tmp_path, run, capsys):
    code, _, err = run(["--model_save_path", str(tmp_path)])
    assert code == 1 and "no feature store" in err and "train.py" in err
    synthetic_store(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(["--model_save_path", str(tmp_path), "--views", "thumbnail,colour"])
    assert exit_info.value.code == 2 and "unknown view(s) colour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--model_save_path", str(tmp_path), "--weights", "colour=2"])
    assert "--weights: weight for unknown view 'colour'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--model_save_path", str(tmp_path), "--binary", "--index", "hnsw"])
    code, _, err = run(["--model_save_path", str(tmp_path), "--remove", "item-001"])
    assert code == 1 and "no index at" in err


def test_a_retrained_store_makes_the_index_stale(tmp_path):
    synthetic_store(tmp_path)
    index = build_catalog_index(store_path(tmp_path))
    synthetic_store(tmp_path, created="2026-02-02T00:00:00+00:00")
    with (
        FeatureStore(store_path(tmp_path)) as store,
        pytest.raises(IndexFileError, match="rebuild it with fusion.py"),
    ):
        check_store(index, store)


def test_read_ids():
    assert read_ids(io.StringIO('a,b\n\n{"id": "c"}\n{"image": "d.jpg"}\n')) == ["a", "b", "c", "d.jpg"]
