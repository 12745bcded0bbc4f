import io
import json

import pytest
from conftest import synthetic_store

from simfusion.cli.index import main, read_ids
from simfusion.io.store import FeatureStore, store_path
from simfusion.search.build import build_catalog_index, check_store, index_path
from simfusion.search.index import IndexFileError, search
from simfusion.search.index_files import load_index
from simfusion.search.vectors import transform


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
    # ids none of which is held: nothing is rewritten (each such remove used to save a new generation)
    generation = load_index(index_path(tmp_path)).meta["generation"]
    code, out, _ = run(["--model_save_path", str(tmp_path), "--remove", "nope,item-001"])
    assert code == 0 and out[0]["removed"] == 0 and out[0]["missing"] == ["nope", "item-001"]
    assert load_index(index_path(tmp_path)).meta["generation"] == generation


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


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--index", "hnsw", "--hnsw_m", "1"], "--hnsw_m: must be a whole number of 2 or more"),  # segfault
        (["--index", "ivf", "--nlist", "41"], "41 IVF lists for 40 items: give --nlist 40 or fewer"),
        (["--index", "opq"], "an OPQ index trains on at least 256 items"),  # FAISS failed after minutes
        (["--whiten", "--whiten_dim", "1"], "--whiten_dim: must be a whole number of 2 or more"),
    ],
)
def test_index_settings_that_cannot_work_are_usage_errors_before_any_work(
    tmp_path, run, capsys, caplog, flags, says
):
    synthetic_store(tmp_path)  # 40 items
    with pytest.raises(SystemExit) as exit_info:
        run(["--model_save_path", str(tmp_path), *flags])  # tuning on: refused before it
    assert exit_info.value.code == 2 and says in capsys.readouterr().err
    assert "tun" not in caplog.text  # nothing was tuned (the tuning logs what it does)


def test_add_and_remove_refuse_the_flags_only_a_rebuild_uses(tmp_path, run, capsys):
    # `--add --index binary --weights hog=5` kept the exact index and weight 1, silently
    synthetic_store(tmp_path)
    cases = (
        (["--add", "--index", "binary", "--weights", "edges=5"], "--weights, --index apply to a rebuild"),
        (["--remove", "item-001", "--no_tune"], "--no_tune apply to a rebuild (without --remove)"),
    )
    for flags, says in cases:
        with pytest.raises(SystemExit) as exit_info:
            run(["--model_save_path", str(tmp_path), *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "keeps the index's own settings" in err and says in err


def test_rebuilding_an_emptied_catalog_is_a_clear_error(tmp_path, run):
    ids, _, _ = synthetic_store(tmp_path)
    assert run(["--model_save_path", str(tmp_path), "--no_tune"])[0] == 0
    assert run(["--model_save_path", str(tmp_path), "--remove", ",".join(ids)])[0] == 0
    code, _, err = run(["--model_save_path", str(tmp_path), "--no_tune"])
    assert code == 1 and "nothing to index" in err and "fusion.py --add" in err and "Traceback" not in err


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
    # the audit of 2026-12-04: each of these was taken as a literal id, "missing", exit 0
    text = b'\xef\xbb\xbfe\n["f", {"id": "g"}, 7]\n"h"\n\xff\n{bad\n[null]\n'
    skipped = []
    assert read_ids(io.BytesIO(text), skipped=skipped) == ["e", "f", "g", "7", "h"]
    assert skipped == ["4", "5", "6"]
