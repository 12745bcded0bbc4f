import numpy as np
import pytest

from simfusion.search.faiss_index import (
    brute_force_search,
    build_faiss_index,
    choose_kind,
    faiss_kind,
    faiss_search,
    measure_recall,
)
from simfusion.search.index import build_index, search
from simfusion.search.index_files import load_index, save_index
from simfusion.search.index_plan import choose_index, parse_bytes, plan_index
from simfusion.search.vectors import fit_transform, l2_normalize


@pytest.fixture(autouse=True)
def one_thread():
    """FAISS's OpenMP threads spin against each other on a shared machine; one is enough here."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n, dim, *, clusters=64, noise=1.0, seed=0):
    """Unit vectors around many overlapping centres, like real embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return l2_normalize(centres[rng.integers(clusters, size=n)] + noise * rng.standard_normal((n, dim)))


def test_faiss_exact_matches_numpy_brute_force():
    data = clustered(400, 32, seed=3)
    queries = clustered(5, 32, seed=4)
    index = build_faiss_index(data, np.arange(400) + 1000, kind="exact")
    scores, labels = faiss_search(index, queries, 10)
    np_scores, rows = brute_force_search(data, queries, 10)
    np.testing.assert_array_equal(labels, rows + 1000)
    np.testing.assert_allclose(scores, np_scores, atol=1e-5)


def test_choose_kind_by_size():
    assert choose_kind(1000) == "exact" and choose_kind(1_000_000) == "hnsw"


@pytest.mark.parametrize(("kind", "m", "bound"), [("ivfpq", 16, 0.8), ("ivfpq", 8, 0.6), ("opq", 8, 0.6)])
def test_pq_recall_against_exact(kind, m, bound):
    # 5,000 seeded 32-d vectors; measured 0.87 (16 bytes), 0.70 (8 bytes), 0.70 (OPQ, 8 bytes)
    data = clustered(5000, 32)
    labels = np.arange(len(data), dtype=np.int64) + 7
    index = build_faiss_index(data, labels, kind=kind, pq_m=m)
    assert faiss_kind(index) == kind and index.ntotal == len(data)
    assert measure_recall(index, data, labels, k=10, queries=100) > bound
    # a query with more lists probed finds at least as much
    queries = data[:50]
    _, truth = brute_force_search(data, queries, 10)
    found = [faiss_search(index, queries, 10, nprobe=probe)[1] for probe in (1, 64)]
    hits = [np.mean([len(set(a) & set(labels[b])) for a, b in zip(f, truth, strict=True)]) for f in found]
    assert hits[1] >= hits[0]


def test_parse_bytes():
    assert parse_bytes("4G") == 4 * 2**30 and parse_bytes("512M") == 512 * 2**20
    assert parse_bytes("1.5k") == 1536 and parse_bytes("1000") == 1000 and parse_bytes("2GiB") == 2 * 2**30
    for bad in ("", "-1G", "4X", "G"):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)


def test_chooser_picks_a_smaller_kind_under_a_smaller_budget():
    n, dim = 10_000_000, 128
    roomy = choose_index(n, dim, max_memory=parse_bytes("64G"))
    assert roomy.kind == "exact" and roomy.recall == 1.0
    budgets = [parse_bytes(text) for text in ("6G", "2G", "1G", "600M")]
    choices = [choose_index(n, dim, max_memory=budget) for budget in budgets]
    for choice, budget in zip(choices, budgets, strict=True):
        assert choice.memory_bytes <= budget
    sizes = [choice.memory_bytes for choice in choices]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 2
    assert choices[-1].kind in ("ivfpq", "opq") and choices[-1].params["pq_m"] < choices[1].params["pq_m"]
    recalls = [choice.recall for choice in choices]
    assert recalls == sorted(recalls, reverse=True)
    # a latency target rules out exact search over ten million vectors
    assert choose_index(n, dim, max_memory=parse_bytes("64G"), target_latency_ms=20).kind != "exact"


def test_plan_from_a_budget_is_recorded():
    plan = plan_index("auto", 1_000_000, 128, None, None, None, parse_bytes("200M"), None)
    assert plan["kind"] in ("ivfpq", "opq") and plan["nlist"] and plan["nprobe"] and plan["pq_m"]
    assert 0 < plan["estimated_recall"] < 1 and plan["estimated_memory"] <= parse_bytes("200M")
    assert plan_index("auto", 100, 128, None, None, None, None, None)["kind"] == "exact"


def catalog(n=3000, seed=0):
    views = {"thumbnail": clustered(n, 24, seed=seed), "edges": clustered(n, 16, seed=seed + 1)}
    return views, [f"item-{i:05d}" for i in range(n)]


@pytest.mark.parametrize("kind", ["ivfpq", "opq", "ivf"])
def test_save_load_and_mmap_give_the_same_results(kind, tmp_path):
    views, ids = catalog()
    vectors, params = fit_transform(views)
    index = build_index(vectors, ids, params=params, kind=kind, pq_m=8 if kind != "ivf" else None)
    assert index.kind == kind and 0 < index.meta["measured_recall"]["fused"] <= 1
    queries = {view: data[::300] for view, data in vectors.items()}
    before = search(index, queries, k=10)
    folder = save_index(index, tmp_path / "index")
    loaded = load_index(folder)
    mapped = load_index(folder, mmap=True)
    assert search(loaded, queries, k=10) == before
    assert search(mapped, queries, k=10) == before
    assert mapped.kind == kind and len(mapped) == len(ids)


def test_build_index_from_a_memory_budget():
    views, ids = catalog(2000)
    vectors, params = fit_transform(views)
    roomy = build_index(vectors, ids, params=params, max_memory=parse_bytes("1G"))
    tight = build_index(vectors, ids, params=params, max_memory=parse_bytes("200K"))
    assert roomy.kind == "exact"
    assert tight.kind in ("ivfpq", "opq") and tight.meta["estimated_memory"] <= parse_bytes("200K")
    assert "measured_recall" in tight.meta
    hits = search(tight, {view: data[:1] for view, data in vectors.items()}, k=5)[0]
    assert len(hits) == 5


def test_fusion_cli_takes_a_memory_budget(tmp_path, capsys):
    import json

    from conftest import synthetic_store

    from simfusion.cli.index import main

    synthetic_store(tmp_path / "model", n=40)
    assert main(["--model_save_path", str(tmp_path / "model"), "--max_index_memory", "1G"]) == 0
    assert load_index(tmp_path / "model" / "index").kind == "exact"
    assert json.loads(capsys.readouterr().out)["items"] == 40
    for bad in (["--max_index_memory", "lots"], ["--max_index_memory", "1G", "--index_kind", "hnsw"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model_save_path", str(tmp_path / "model"), *bad])
        assert exit_info.value.code == 2
