import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from simfusion.evaluate.protocol import (
    baseline_vectors,
    draw_queries,
    fused_ranking,
    rank_methods,
    score_rankings,
)
from simfusion.evaluate.report import format_table


def clustered(rng, labels, *, dim=16, noise=0.5):
    """Vectors around one random centre per label."""
    centres = rng.normal(size=(labels.max() + 1, dim))
    return (centres[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32)


def test_queries_are_seeded_and_all_when_asked():
    assert draw_queries(5, None).tolist() == [0, 1, 2, 3, 4]
    assert draw_queries(5, 9).tolist() == [0, 1, 2, 3, 4]
    first = draw_queries(100, 10, seed=0)
    assert np.array_equal(first, draw_queries(100, 10, seed=0)) and len(set(first.tolist())) == 10


def test_a_query_never_finds_itself(rng):
    vectors = {"v": rng.normal(size=(30, 8)).astype(np.float32)}
    rows = np.arange(30)
    ranking = rank_methods(vectors, rows, k=5)["v"]
    assert ranking.shape == (30, 5)
    assert not np.any(ranking == rows[:, None])


def test_known_scores():
    labels = np.array(["a", "a", "b", "a", "b"])
    rankings = {"m": np.array([[1, 2, 3], [2, 4, 0]])}  # relevance: query 0 [1, 0, 1], query 1 [0, 0, 1]
    scores = score_rankings(rankings, labels, np.array([0, 1]), ks=(3,))["m"]
    assert scores["P@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert scores["R@3"] == pytest.approx((2 / 2 + 1 / 2) / 2)  # each 'a' query has 2 other 'a' items
    assert scores["mAP@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)


@pytest.mark.parametrize("fusion", ["early", "late", "rrf"])
def test_fusing_a_good_and_a_noisy_view_beats_the_noisy_one(rng, fusion):
    labels = np.repeat(np.arange(6), 20)
    good = clustered(rng, labels, noise=0.8)
    noisy = clustered(rng, labels, noise=3.0)
    vectors = {
        "good": good / np.linalg.norm(good, axis=1, keepdims=True),
        "noisy": noisy / np.linalg.norm(noisy, axis=1, keepdims=True),
    }
    rows = np.arange(len(labels))
    rankings = rank_methods(vectors, rows, k=10)
    rankings["fused"] = fused_ranking(vectors, rows, k=10, fusion=fusion, view_rankings=rankings)
    assert not np.any(rankings["fused"] == rows[:, None])
    scores = score_rankings(rankings, labels, rows, ks=(10,))
    assert scores["fused"]["P@10"] > scores["noisy"]["P@10"]


def test_unknown_fusion_is_a_value_error(rng):
    with pytest.raises(ValueError, match="fusion must be one of"):
        fused_ranking({"v": rng.normal(size=(5, 3))}, np.arange(5), k=2, fusion="mean")


def test_baselines_shapes(rng):
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    out = baseline_vectors(images, pca_dim=5, bins=4)
    assert out["pixels"].shape == (12, 192) and out["pca"].shape == (12, 5)
    assert out["histogram"].shape == (12, 64)
    assert np.allclose((out["histogram"] ** 2).sum(axis=1), 1.0)  # sqrt of a distribution


def test_table_has_a_row_per_method():
    table = format_table({"a": {"P@10": 0.5, "mAP@10": 0.25}, "b": {"P@10": 1.0, "mAP@10": 1.0}})
    assert table.splitlines()[0] == "| method | P@10 | mAP@10 |"
    assert "| b | 1.0000 | 1.0000 |" in table


def test_cli_on_a_store(tmp_path, rng):
    from simfusion.io.store import write_store

    labels = np.repeat(np.arange(3), 8)
    ids = [f"item-{i}" for i in range(len(labels))]
    records = []
    for i, key in enumerate(ids):
        image = np.full((16, 16, 3), 60 * labels[i], dtype=np.uint8) + rng.integers(
            0, 20, (16, 16, 3), dtype=np.uint8
        )
        Image.fromarray(image).save(tmp_path / f"{key}.png")
        records.append({"id": key, "category": f"c{labels[i]}", "thumbnail": str(tmp_path / f"{key}.png")})
    maps = {
        view: clustered(rng, labels, dim=8, noise=n).reshape(len(ids), 1, 2, 4)
        for view, n in (("thumbnail", 0.5), ("edges", 1.0))
    }
    model = tmp_path / "model"
    model.mkdir()
    write_store(
        model / "features.h5",
        catalog_records=records,
        views={view: (ids, m, {"model": "test"}) for view, m in maps.items()},
    )
    command = [
        sys.executable,
        "evaluate.py",
        "--model_save_path",
        str(model),
        "--k",
        "5",
        "--queries",
        "0",
        "--json",
        str(tmp_path / "eval.json"),
        "--plot",
        str(tmp_path / "eval.png"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    assert "24 queries over 24 items" in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["results"]) == {"thumbnail", "edges", "pixels", "pca", "histogram", "fused"}
    assert report["results"]["thumbnail"]["P@5"] > 0.9
    clean = report["results"]
    assert (tmp_path / "eval.png").stat().st_size > 1000
    missing = subprocess.run(
        command[:3] + [str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=REPO
    )
    assert missing.returncode == 1 and "evaluate:" in missing.stderr
    # one thumbnail gone and one corrupt cost the baselines those items, not the evaluation
    (tmp_path / "item-3.png").unlink()
    (tmp_path / "item-4.png").write_bytes(b"not a png")
    damaged = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert damaged.returncode == 0, damaged.stderr
    assert "2 of 24 thumbnails cannot be read" in damaged.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["baselines_unread_thumbnails"] == 2 and set(report["results"]) == set(clean)
    assert report["results"]["thumbnail"] == clean["thumbnail"]  # the views never read thumbnails


def test_diffused_ranking_leaves_the_query_out_and_ranks_a_dense_group_first(rng):
    from simfusion.evaluate.protocol import diffused_ranking
    from simfusion.search.vectors import l2_normalize

    labels = np.repeat(np.arange(4), 30)
    vectors = l2_normalize(clustered(rng, labels, dim=16, noise=0.8))
    queries = np.arange(0, 120, 7)
    ranked = diffused_ranking(vectors, queries, k=20)
    assert ranked.shape == (len(queries), 20)
    assert not np.any(ranked == queries[:, None])  # never itself
    assert all(len(set(row)) == 20 for row in ranked.tolist())
    plain = fused_ranking({"v": vectors}, queries, k=20)
    scores = score_rankings({"plain": plain, "diffused": ranked}, labels, queries, ks=(20,))
    assert scores["diffused"]["mAP@20"] >= scores["plain"]["mAP@20"] - 0.02


def test_diffusion_reorders_the_index_own_ranking_when_it_has_the_clusters_term(tmp_path):
    """evaluate.py --rerank diffusion scores what predict.py --rerank diffusion does: the index's
    ranking (views and clusters term) re-ranked, not the views alone."""
    from conftest import synthetic_model

    from simfusion.cli.evaluate import main as evaluate_main
    from simfusion.evaluate.protocol import CLUSTERED

    synthetic_model(tmp_path / "model", n=120)
    argv = ["--model_save_path", str(tmp_path / "model"), "--queries", "0", "--baselines", ""]
    assert evaluate_main([*argv, "--rerank", "diffusion", "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert CLUSTERED in results, "120 items: the index has the clusters term"
    diffused = results[f"{CLUSTERED} + diffusion"]
    assert not any(name.endswith("+ diffusion") and name != f"{CLUSTERED} + diffusion" for name in results)
    assert diffused["P@10"] >= results[CLUSTERED]["P@10"] - 0.05 and diffused["P@10"] > 0.9


def test_results_go_into_a_folder_that_does_not_exist_yet_and_bad_counts_are_usage_errors(tmp_path, capsys):
    from conftest import synthetic_model

    from simfusion.cli.evaluate import main as evaluate_main

    synthetic_model(tmp_path / "model", n=30)
    argv = ["--model_save_path", str(tmp_path / "model"), "--queries", "0", "--baselines", ""]
    target = tmp_path / "new" / "folder" / "eval.json"  # a traceback after the whole run, before
    assert evaluate_main([*argv, "--json", str(target)]) == 0
    assert json.loads(target.read_text())["queries"] == 30
    assert evaluate_main([*argv, "--json", str(tmp_path / "new")]) == 1  # a folder: one line, exit 1
    for flag in ("--queries", "--seed"):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main(["--model_save_path", str(tmp_path / "model"), flag, "-1"])
        assert exit_info.value.code == 2 and "must be a whole number of 0 or more" in capsys.readouterr().err
