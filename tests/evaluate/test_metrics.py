import numpy as np
import pytest

from simfusion.evaluate.metrics import (
    average_precision_at_k,
    evaluate_rankings,
    mean_average_precision_at_k,
    precision_at_k,
    rank_catalog,
    recall_at_k,
)

# One query of label 7 whose ranking is relevant, not, relevant, not.
RANKED = np.array([[7, 3, 7, 1]])
QUERY = np.array([7])


def test_precision_at_k_known_values():
    assert precision_at_k(RANKED, QUERY, 4) == pytest.approx(0.5)
    assert precision_at_k(RANKED, QUERY, 1) == pytest.approx(1.0)
    assert precision_at_k(RANKED, QUERY, 2) == pytest.approx(0.5)
    # The mean over queries: a second query with nothing relevant halves it.
    assert precision_at_k(np.array([[7, 3, 7, 1], [0, 0, 0, 0]]), [7, 5], 4) == pytest.approx(0.25)


def test_precision_accepts_one_query_as_1d():
    assert precision_at_k([7, 3, 7, 1], 7, 4) == pytest.approx(0.5)


def test_recall_at_k_known_values():
    assert recall_at_k(RANKED, QUERY, 4, n_relevant=4) == pytest.approx(0.5)
    assert recall_at_k(RANKED, QUERY, 2, n_relevant=[2]) == pytest.approx(0.5)
    # A query with no relevant item in the catalog scores 0, not NaN.
    assert recall_at_k(np.array([[1, 2], [7, 7]]), [5, 7], 2, n_relevant=[0, 2]) == pytest.approx(0.5)


def test_average_precision_hashing_convention():
    # Relevant at ranks 1 and 3: (1/1 + 2/3) / 2 relevant retrieved.
    ap = average_precision_at_k(RANKED, QUERY, 4)
    assert ap.shape == (1,) and ap.dtype == np.float64
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_normalised_by_relevant_in_catalog():
    # Same sum, normalised by min(k, 3 relevant items in the catalog).
    assert average_precision_at_k(RANKED, QUERY, 4, n_relevant=3)[0] == pytest.approx((1 + 2 / 3) / 3)
    # min(k, n_relevant) caps the normaliser at k.
    assert average_precision_at_k(RANKED, QUERY, 4, n_relevant=100)[0] == pytest.approx((1 + 2 / 3) / 4)


def test_average_precision_edge_cases():
    assert average_precision_at_k([[1, 2, 3]], [9], 3)[0] == 0.0  # nothing relevant
    assert average_precision_at_k([[9, 9, 9]], [9], 3)[0] == pytest.approx(1.0)
    # Relevant only at rank 2: precision@2 = 1/2.
    assert average_precision_at_k([[1, 9, 3]], [9], 3)[0] == pytest.approx(0.5)
    # Ranks past k do not count.
    assert average_precision_at_k([[1, 2, 9]], [9], 2)[0] == 0.0


def test_mean_average_precision_is_mean_of_ap():
    ranked = np.array([[7, 3, 7, 1], [2, 2, 0, 0], [1, 9, 9, 9]])
    queries = np.array([7, 2, 9])
    expected = np.mean([(1 + 2 / 3) / 2, 1.0, (1 / 2 + 2 / 3 + 3 / 4) / 3])
    assert mean_average_precision_at_k(ranked, queries, 4) == pytest.approx(expected)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="fewer than k"):
        precision_at_k(RANKED, QUERY, 5)
    with pytest.raises(ValueError, match="one label per ranking"):
        average_precision_at_k(RANKED, [7, 7], 4)
    with pytest.raises(ValueError, match="positive integer"):
        mean_average_precision_at_k(RANKED, QUERY, 0)


def test_rank_catalog_matches_brute_force_cosine(rng):
    catalog = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)) * 3.0  # scale must not matter for cosine
    indices, scores = rank_catalog(queries, catalog, k=7)
    assert indices.shape == scores.shape == (5, 7)
    assert indices.dtype == np.int64 and scores.dtype == np.float32
    unit = catalog / np.linalg.norm(catalog, axis=1, keepdims=True)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(indices, np.argsort(-cosine, axis=1)[:, :7])
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, indices, 1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_rank_catalog_leaves_each_query_out_of_its_results(rng):
    catalog = rng.normal(size=(30, 6)).astype(np.float32)
    ids = np.array([0, 4, 29])
    indices, _ = rank_catalog(catalog[ids], catalog, k=29, exclude_self_ids=ids)
    assert indices.shape == (3, 29)
    for row, own in zip(indices, ids, strict=True):
        assert own not in row
        assert sorted(row) == sorted(set(range(30)) - {own})  # every other item still ranked
    # Without exclusion a catalog item ranks itself first.
    first, _ = rank_catalog(catalog[ids], catalog, k=1)
    np.testing.assert_array_equal(first[:, 0], ids)


def test_rank_catalog_keeps_an_exact_duplicate_of_the_query(rng):
    catalog = rng.normal(size=(10, 4)).astype(np.float32)
    catalog[5] = catalog[2]
    indices, scores = rank_catalog(catalog[[2]], catalog, k=3, exclude_self_ids=[2])
    assert indices[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0)
    assert 2 not in indices[0]


def test_rank_catalog_minus_one_means_no_exclusion(rng):
    catalog = rng.normal(size=(10, 4)).astype(np.float32)
    indices, _ = rank_catalog(catalog[[3, 4]], catalog, k=9, exclude_self_ids=[-1, 4])
    assert indices[0, 0] == 3 and 4 not in indices[1]
    everything, _ = rank_catalog(catalog[[3]], catalog, k=10, exclude_self_ids=[-1])
    assert sorted(everything[0]) == list(range(10))
    with pytest.raises(ValueError, match="lower k"):
        rank_catalog(catalog[[3]], catalog, k=10, exclude_self_ids=[3])


def test_rank_catalog_rejects_bad_input(rng):
    catalog = rng.normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="same features"):
        rank_catalog(rng.normal(size=(2, 3)), catalog, k=2)
    with pytest.raises(ValueError, match="one per query"):
        rank_catalog(catalog[:2], catalog, k=2, exclude_self_ids=[0])
    with pytest.raises(ValueError, match="NaN"):
        rank_catalog(np.full((1, 4), np.nan), catalog, k=2)


def test_evaluate_rankings_per_method():
    catalog_labels = np.array([0, 0, 1, 1, 0, 1])
    query_labels = np.array([0, 1])
    rankings = {
        "perfect": np.array([[1, 4, 2], [3, 5, 0]]),
        "mixed": np.array([[2, 1, 3], [0, 3, 5]]),
    }
    results = evaluate_rankings(
        rankings, catalog_labels=catalog_labels, query_labels=query_labels, precision_k=2, map_k=3
    )
    assert set(results) == {"perfect", "mixed"}
    assert results["perfect"] == {"P@2": pytest.approx(1.0), "mAP@3": pytest.approx(1.0)}
    # mixed: query 0 relevance [0, 1, 0] -> P@2 1/2, AP 1/2; query 1 [0, 1, 1] -> P@2 1/2, AP (1/2 + 2/3) / 2.
    assert results["mixed"]["P@2"] == pytest.approx(0.5)
    assert results["mixed"]["mAP@3"] == pytest.approx((0.5 + (0.5 + 2 / 3) / 2) / 2)


def test_evaluate_rankings_end_to_end_with_rank_catalog(rng):
    # Two well-separated clusters: every query's neighbours share its label.
    labels = np.repeat([0, 1], 10)
    vectors = np.where(labels[:, None] == 0, [1.0, 0.0], [0.0, 1.0]) + rng.normal(scale=0.05, size=(20, 2))
    queries = np.array([0, 15])
    ranking, _ = rank_catalog(vectors[queries], vectors, k=9, exclude_self_ids=queries)
    results = evaluate_rankings(
        {"cosine": ranking}, catalog_labels=labels, query_labels=labels[queries], precision_k=9, map_k=9
    )
    assert results["cosine"] == {"P@9": pytest.approx(1.0), "mAP@9": pytest.approx(1.0)}


def test_evaluate_rankings_rejects_rows_outside_the_catalog():
    with pytest.raises(ValueError, match="outside"):
        evaluate_rankings(
            {"m": np.array([[0, 7]])}, catalog_labels=np.array([0, 1]), query_labels=np.array([0])
        )
