import io
import json
import logging
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA, synthetic_model, synthetic_store, train_tiny_model
from PIL import Image

from simfusion.cli.index import main as fusion_main
from simfusion.cli.predict import main
from simfusion.io.montage import montage_size
from simfusion.io.store import store_path
from simfusion.search.build import index_path
from simfusion.search.catalog import Catalog
from simfusion.search.options import SearchOptions
from simfusion.search.rules import Rules, ruled


@pytest.fixture
def cli(capsys, caplog, monkeypatch):
    """Call a main(argv) with stdin: (exit code, JSON lines of stdout, stderr and log text)."""

    def call(fn, argv, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        caplog.clear()
        code = fn(argv)
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines() if line.strip()], err + caplog.text

    return call


# ---------------------------------------------------------------- ranking and rules (no encoders)


def test_rank_applies_rules_and_searches_more_when_they_filter(tmp_path):
    ids, records, views = synthetic_model(tmp_path, n=60)
    catalog = Catalog.open(tmp_path)
    queries = catalog.vectors({view: maps[:3] for view, (_, maps, _) in views.items()})
    plain = catalog.rank(queries, records[:3], SearchOptions(k=5))
    assert [hits[0]["id"] for hits, _ in plain] == ids[:3]
    assert plain[0][0][0]["category"] == records[0]["category"]  # record fields come with each hit

    rules = Rules(filters={"brand": "acme"}, exclude_ids={ids[1]})
    for hits, _ in catalog.rank(queries, records[:3], SearchOptions(k=25, rules=rules, candidates=1)):
        assert len(hits) == 25 and all(hit["brand"] == "acme" for hit in hits)
        assert ids[1] not in {hit["id"] for hit in hits}

    unlabelled = [{"id": "q", "image": "q.jpg"} for _ in range(3)]
    same = SearchOptions(k=5, rules=Rules(same_category=True))
    for row, (hits, inferred) in enumerate(catalog.rank(queries, unlabelled, same)):
        assert inferred == records[row]["category"]
        assert hits and all(hit["category"] == inferred for hit in hits)
    given = [{"id": "q", "category": "bag"}] * 3
    for hits, inferred in catalog.rank(queries, given, same):
        assert inferred is None and all(hit["category"] == "bag" for hit in hits)


def test_same_category_with_nothing_to_infer_is_ignored_rather_than_empty():
    hits = [{"id": f"item-{i}", "score": 1.0 - i / 10} for i in range(8)]
    kept, inferred = ruled(hits, {"id": "q"}, Rules(same_category=True), k=5)
    assert inferred is None and [hit["id"] for hit in kept] == [f"item-{i}" for i in range(5)]


def test_catalog_reads_only_the_records_it_is_asked_for(tmp_path):
    ids, records, _ = synthetic_model(tmp_path, n=20)
    catalog = Catalog.open(tmp_path)
    assert len(catalog) == 20 and ids[3] in catalog and "nope" not in catalog
    assert catalog.records([ids[5], "nope", ids[2]]) == {ids[5]: records[5], ids[2]: records[2]}
    assert catalog.record(ids[0]) == records[0] and catalog.record("nope") is None


def test_more_like_this_leaves_the_item_out_of_its_own_results(tmp_path):
    ids, records, _ = synthetic_model(tmp_path, n=30)
    [answer] = Catalog.open(tmp_path).search_ids([ids[4]], k=5)
    assert answer["id"] == ids[4] and len(answer["results"]) == 5
    assert ids[4] not in [hit["id"] for hit in answer["results"]]
    assert answer["results"][0]["category"] == records[4]["category"]
    with pytest.raises(KeyError, match="not in the catalog"):
        Catalog.open(tmp_path).search_ids(["nope"])


def test_empty_catalog_gives_no_results(tmp_path):
    _, records, views = synthetic_model(tmp_path, n=10)
    catalog = Catalog.open(tmp_path)
    from simfusion.search.index_edit import remove_items

    remove_items(catalog.index, list(catalog.index.ids))
    queries = catalog.vectors({view: maps[:1] for view, (_, maps, _) in views.items()})
    assert catalog.rank(queries, records[:1], SearchOptions(k=3)) == [([], None)]


# ---------------------------------------------------------------- clear errors


def test_missing_store_or_index_is_a_clear_error(tmp_path, cli):
    code, out, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and not out and "no feature store" in err and "train.py" in err
    synthetic_store(tmp_path)
    code, _, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and "no index at" in err and "fusion.py" in err


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda meta: meta.pop("weights"), "`weights` does not give every view"),
        (lambda meta: meta.pop("ids"), "`ids` is not a list"),
        (lambda meta: meta.update(params=None), "`params` or `store`"),
        (lambda meta: meta.update(store=None), "`params` or `store`"),
        (lambda meta: meta.update(fusion="bogus"), "`fusion` or `kind`"),
        (lambda meta: meta.update(kind="bogus"), "`fusion` or `kind`"),
        (lambda meta: meta.update(labels=meta["labels"][:-1]), "`labels`"),
    ],
)
def test_an_index_json_with_a_missing_or_wrong_key_is_a_clear_error(tmp_path, cli, edit, says):
    # a hand-edited index.json: KeyError, TypeError and AttributeError tracebacks before
    synthetic_model(tmp_path)
    path = os.path.join(index_path(tmp_path), "index.json")
    with open(path) as stream:
        meta = json.load(stream)
    edit(meta)
    with open(path, "w") as stream:
        json.dump(meta, stream)
    code, _, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and says in err and "rebuild the index with fusion.py" in err and "Traceback" not in err
    code, _, err = cli(fusion_main, ["--model_save_path", str(tmp_path), "--remove", "item-001"])
    assert code == 1 and says in err


def test_store_or_index_of_another_version_is_a_clear_error(tmp_path, cli):
    synthetic_model(tmp_path)
    with open(os.path.join(index_path(tmp_path), "index.json")) as stream:
        meta = json.load(stream)
    meta["format_version"] = 99
    with open(os.path.join(index_path(tmp_path), "index.json"), "w") as stream:
        json.dump(meta, stream)
    code, _, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and "index format version 99" in err and "rebuild it with fusion.py" in err

    synthetic_model(tmp_path)
    synthetic_store(tmp_path, created="2027-01-01T00:00:00+00:00")  # retrained, index not rebuilt
    code, _, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and "another model or training run" in err

    with h5py.File(store_path(tmp_path), "r+") as file:
        file.attrs["format_version"] = 7
    code, _, err = cli(main, ["--model_save_path", str(tmp_path), "q.jpg"])
    assert code == 1 and "format version 7" in err


def test_unknown_view_and_bad_rules_exit_2(tmp_path, cli, capsys):
    synthetic_model(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli(main, ["--model_save_path", str(tmp_path), "--views", "colour", "q.jpg"])
    assert exit_info.value.code == 2 and "unknown view(s) colour" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli(main, ["--model_save_path", str(tmp_path), "--boost", "brand:2", "q.jpg"])
    assert exit_info.value.code == 2 and "key=value:factor" in capsys.readouterr().err
    # a folder whose name is not UTF-8 failed a whole --add: no record naming it could be written
    with pytest.raises(SystemExit) as exit_info:
        cli(fusion_main, ["--model_save_path", str(tmp_path), "--base_image_path", "dir\udcffx", "--add"])
    assert exit_info.value.code == 2 and "is not valid UTF-8" in capsys.readouterr().err
    # a detector that cannot be built failed every query, exit 1 (object_detection.py exits 2)
    cases = (("nope", "unknown detector 'nope'"), ("keras:", "needs an argument"))
    cases += (("keras:/no/such.keras", "no detector file"), ("objectness:x", "takes no argument or `split`"))
    for spec, says in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli(main, ["--model_save_path", str(tmp_path), "--detector", spec, "q.jpg"])
        assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_unreadable_query_gives_an_error_record_and_exit_1(tmp_path, cli):
    synthetic_model(tmp_path)
    broken = os.path.join(SAMPLE_DATA, "broken", "truncated.jpg")
    records = [{"id": "gone", "image": "missing.jpg"}, {"id": "bad", "image": broken}, {"nothing": 1}]
    code, out, err = cli(main, ["--model_save_path", str(tmp_path)], "\n".join(map(json.dumps, records)))
    assert code == 1
    assert [record.get("id") for record in out] == ["gone", "bad", None]
    assert all("error" in record and "results" not in record for record in out)
    assert out[0]["error"].startswith("predict: no such file") and "cannot read image" in out[1]["error"]
    assert "no image path" in out[2]["error"]


def test_input_that_is_no_record_at_all_exits_1_not_0(tmp_path, cli, caplog):
    caplog.set_level(logging.INFO)
    synthetic_model(tmp_path)
    code, out, _ = cli(main, ["--model_save_path", str(tmp_path)], "not json\n[1, 2]\n")
    assert code == 1 and out == []  # before: "0 queries, 0 failed" and exit 0
    assert "0 queries, 0 failed, 3 input(s) not a record (lines 1, 2)" in caplog.text
    code, out, _ = cli(main, ["--model_save_path", str(tmp_path)], json.dumps({"id": "q", "image": 123}))
    assert code == 1 and out[0]["error"] == "predict: `image` must be an image path (a string), not int"
    assert "record 'q': `image` must be" in caplog.text  # the log names the record


# ---------------------------------------------------------------- end to end with a tiny trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """OUT/model trained for 1 epoch at 32x32 on 20 sample images; one image per class held out."""
    return train_tiny_model(tmp_path_factory.mktemp("out"))


@pytest.mark.slow
def test_end_to_end_query_add_remove_and_montage(trained, cli, tmp_path):
    model, catalog, held_out = trained["model"], trained["catalog"], trained["held_out"]
    shutil.copytree(model, tmp_path / "model")  # --add and --remove change the store and the index
    model = str(tmp_path / "model")
    query = os.path.join(SAMPLE_DATA, catalog[0]["image"])
    code, out, _ = cli(
        main, ["--model_save_path", model, "--top_k", "5", "--output_image_path", str(tmp_path), query]
    )
    assert code == 0 and len(out) == 1 and out[0]["image"] == query
    results = out[0]["results"]
    assert len(results) == 5 and catalog[0]["id"] in [hit["id"] for hit in results[:3]]
    assert set(results[0]) >= {"id", "score", "scores", "category", "price"}
    assert set(results[0]["scores"]) == {"thumbnail", "foreground"}
    assert [hit["score"] for hit in results] == sorted((hit["score"] for hit in results), reverse=True)
    with Image.open(tmp_path / "recommendations.png") as picture:
        assert picture.size == montage_size(1, 5)
    # --top_k past the catalog sizes the picture by the results that came back, not by top_k
    argv = ["--model_save_path", model, "--top_k", "100000", "--output_image_path", str(tmp_path), query]
    code, out, _ = cli(main, argv)
    with Image.open(tmp_path / "recommendations.png") as picture:
        assert code == 0 and picture.size == montage_size(1, len(out[0]["results"]))
    # a picture that cannot be written: the results are out, then one line and exit 1
    (tmp_path / "file").write_text("not a folder")
    argv = ["--model_save_path", model, "--output_image_path", str(tmp_path / "file"), query]
    code, out, err = cli(main, argv)
    assert code == 1 and len(out[0]["results"]) == 10 and "cannot write" in err and "Traceback" not in err

    # add the held-out images without retraining: each is then its own best match
    added = "\n".join(json.dumps(record) for record in held_out)
    code, out, _ = cli(
        fusion_main, ["--model_save_path", model, "--add", "--base_image_path", SAMPLE_DATA], added
    )
    assert code == 0 and all(record["indexed"] for record in out)
    code, out, _ = cli(
        fusion_main, ["--model_save_path", model, "--add", "--base_image_path", SAMPLE_DATA], added
    )
    # a retried add (as after a crash) is not an error: the catalog already holds those records
    assert code == 0 and all(
        record["indexed"] and record["note"] == "already in the catalog" for record in out
    )
    code, out, _ = cli(  # a line that is no record fails the add, as it fails predict.py
        fusion_main, ["--model_save_path", model, "--add", "--base_image_path", SAMPLE_DATA], added + "\n{cut"
    )
    assert code == 1 and all(record["indexed"] for record in out) and len(out) == len(held_out)
    changed = "\n".join(json.dumps({**record, "price": -1}) for record in held_out)
    code, out, _ = cli(
        fusion_main, ["--model_save_path", model, "--add", "--base_image_path", SAMPLE_DATA], changed
    )
    assert code == 1 and all(
        "already in the catalog with another record" in record["error"] for record in out
    )
    stdin = "\n".join(json.dumps({"id": f"q{i}", "image": r["image"]}) for i, r in enumerate(held_out))
    argv = ["--model_save_path", model, "--base_image_path", SAMPLE_DATA, "--top_k", "3"]
    code, out, _ = cli(main, argv + ["--same_category", "--filter", "currency=EUR"], stdin)
    assert code == 0
    for record, expected in zip(out, held_out, strict=True):
        assert record["results"][0]["id"] == expected["id"]
        assert record["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert record["inferred_category"] == expected["category"]
        assert all(hit["category"] == expected["category"] for hit in record["results"])

    # remove them again: they disappear from the results
    gone = ",".join(record["id"] for record in held_out)
    code, out, _ = cli(fusion_main, ["--model_save_path", model, "--remove", gone])
    assert code == 0 and out[0]["removed"] == 5
    code, out, _ = cli(main, argv + ["--top_k", "20"], stdin)
    assert code == 0 and not {r["id"] for r in held_out} & {hit["id"] for q in out for hit in q["results"]}


@pytest.mark.slow
def test_run_prediction_script(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained["model"], out / "model")
    env = {**os.environ, "PYTHON": sys.executable, "TOP_K": "4", "TF_CPP_MIN_LOG_LEVEL": "2"}
    query = os.path.join(SAMPLE_DATA, "query.jpg")
    done = subprocess.run(
        [os.path.join(REPO, "run-prediction.sh"), query, str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(printed) == 1 and len(printed[0]["results"]) == 4
    with open(out / "prediction.jsonl") as stream:
        assert [json.loads(line) for line in stream] == printed
    with Image.open(out / "recommendations.png") as picture:
        assert picture.size == montage_size(1, 4)
    # the montage shows the catalog's thumbnails, found in OUT/views beside OUT/model
    array = np.asarray(Image.open(out / "recommendations.png"))
    assert array.std() > 10


@pytest.mark.slow
def test_one_query_with_a_bad_box_fails_alone(trained, cli):
    image = trained["catalog"][0]["image"]
    stdin = "\n".join(
        json.dumps(record)
        for record in (
            {"id": "ok", "image": image},
            {"id": "flat", "image": image, "box": [5, 5, 5, 20]},  # no area
            {"id": "ok2", "image": image},
        )
    )
    code, out, _ = cli(main, ["--model_save_path", trained["model"], "--base_image_path", SAMPLE_DATA], stdin)
    assert code == 1 and [record["id"] for record in out] == ["ok", "flat", "ok2"]
    assert out[0]["results"] and out[2]["results"] and "results" not in out[1]
    assert out[1]["error"].startswith("predict: ")


@pytest.mark.slow
def test_two_concurrent_adds_keep_both_batches(trained, tmp_path):
    model = str(shutil.copytree(trained["model"], tmp_path / "model"))
    held_out = trained["held_out"]
    batches = [held_out[: len(held_out) // 2], held_out[len(held_out) // 2 :]]
    adds = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(REPO, "fusion.py"),
                "--model_save_path",
                model,
                "--add",
                "--base_image_path",
                SAMPLE_DATA,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in batches
    ]
    for add, batch in zip(adds, batches, strict=True):
        add.stdin.write("\n".join(json.dumps(record) for record in batch))
        add.stdin.close()
    for add in adds:
        assert add.wait(timeout=300) == 0, add.stderr.read()
    catalog = Catalog.open(model)
    assert all(record["id"] in catalog for record in held_out)
    assert len(catalog) == len(trained["catalog"]) + len(held_out)


@pytest.mark.slow
def test_damaged_model_files_are_clear_errors_not_tracebacks(trained, cli, tmp_path):
    model = shutil.copytree(trained["model"], tmp_path / "model")
    query = os.path.join(SAMPLE_DATA, trained["catalog"][0]["image"])
    info = json.loads((model / "training.json").read_text())
    keras_file = model / info["views"]["thumbnail"]["model"]
    keras_file.write_bytes(keras_file.read_bytes()[:107])  # a model cut short
    code, out, err = cli(main, ["--model_save_path", str(model), query])
    assert code == 1 and "Traceback" not in err
    assert len(out) == 1 and "cannot load the thumbnail model" in out[0]["error"]
    assert "run train.py again" in out[0]["error"]
    (model / "training.json").write_text('{"views": {}}')  # JSON, but not what train.py writes
    code, out, err = cli(main, ["--model_save_path", str(model), query])
    assert code == 1 and not out and "not a training.json that train.py wrote" in err


def test_views_naming_no_view_exits_2(tmp_path, cli, capsys):
    synthetic_model(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli(main, ["--model_save_path", str(tmp_path), "--views", ",", "q.jpg"])
    assert exit_info.value.code == 2 and "name at least one view" in capsys.readouterr().err
