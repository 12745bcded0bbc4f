import numpy as np
import pytest

from simfusion.search.vectors import (
    apply_whitening,
    binary_codes,
    fit_transform,
    fit_whitening,
    fuse,
    fuse_scores,
    hamming_similarity,
    l2_normalize,
    normalize_weights,
    parse_weights,
    pool_features,
    rrf,
    transform,
)


def maps(n=6, h=3, w=4, c=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)


def test_pool_features_known_values_and_shapes():
    data = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    np.testing.assert_allclose(pool_features(data, pooling="avg")[0], [4.5, 5.5, 6.5])
    np.testing.assert_allclose(pool_features(data, pooling="max")[1], [21, 22, 23])
    assert pool_features(data, pooling="flatten").shape == (2, 12)
    avgmax = pool_features(data, pooling="avgmax")
    assert avgmax.shape == (2, 6) and avgmax.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(avgmax[:, :3], axis=1), 1, rtol=1e-6)
    gem = pool_features(np.full((1, 2, 2, 1), 2.0, np.float32), pooling="gem")
    np.testing.assert_allclose(gem, [[2.0]], rtol=1e-5)
    # GeM lies between the average and the max of positive maps
    positive = np.abs(maps())
    g = pool_features(positive, pooling="gem")
    assert np.all(g >= pool_features(positive, pooling="avg") - 1e-6)
    assert np.all(g <= pool_features(positive, pooling="max") + 1e-6)


def test_pool_features_passes_vectors_and_rejects_bad_options():
    vectors = np.ones((3, 7), np.float32)
    assert pool_features(vectors).shape == (3, 7)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_features(maps(), pooling="median")
    with pytest.raises(ValueError, match=r"\(N, h, w, c\)"):
        pool_features(np.ones((1, 2, 3, 4, 5)))


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3, 4], [0, 0]], np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])


def test_whitening_shapes_and_decorrelation():
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((16, 16)) * np.linspace(5, 0.1, 16)
    catalog = l2_normalize(rng.standard_normal((200, 16)) @ mix)
    params = fit_whitening(catalog, dim=8, shrinkage=0.0)
    assert params["components"].shape == (8, 16) and params["mean"].shape == (16,)
    out = apply_whitening(catalog, params)
    assert out.shape == (200, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
    before = np.corrcoef(catalog[:, :8].T)
    after = np.corrcoef(((catalog - params["mean"]) @ params["components"].T).T)
    assert np.abs(after - np.eye(8)).max() < 1e-3 < np.abs(before - np.eye(8)).max()
    with pytest.raises(ValueError, match="dim must be in"):
        fit_whitening(catalog, dim=17)
    with pytest.raises(ValueError, match="fitted on 16"):
        apply_whitening(np.ones((1, 4)), params)


def test_fit_transform_then_transform_match_for_the_same_items():
    data = {"thumbnail": maps(seed=2), "edges": maps(c=3, seed=3)}
    vectors, params = fit_transform(data, whiten=True, whiten_dim=4)
    assert vectors["thumbnail"].shape == (6, 4) and vectors["edges"].shape == (6, 4)
    assert {"thumbnail/components", "edges/center"} <= set(params)
    again = transform({"edges": data["edges"][:2]}, params)
    np.testing.assert_allclose(again["edges"], vectors["edges"][:2], atol=1e-5)
    plain, plain_params = fit_transform(data)
    assert plain["edges"].shape == (6, 6) and "edges/mean" not in plain_params


def test_fuse_inner_product_is_weighted_cosine_sum():
    rng = np.random.default_rng(4)
    a = {"x": l2_normalize(rng.standard_normal((3, 4))), "y": l2_normalize(rng.standard_normal((3, 6)))}
    weights = {"x": 3.0, "y": 1.0}
    fused = fuse(a, weights)
    assert fused.shape == (3, 10)
    expected = 0.75 * (a["x"] @ a["x"].T) + 0.25 * (a["y"] @ a["y"].T)
    np.testing.assert_allclose(fused @ fused.T, expected, atol=1e-6)
    late = fuse_scores({"x": a["x"] @ a["x"][0], "y": a["y"] @ a["y"][0]}, weights)
    np.testing.assert_allclose(late, expected[0], atol=1e-6)


def test_rrf_known_values():
    labels, scores = rrf([[1, 2, 3], [3, 1]], k=60)
    assert labels.tolist() == [1, 3, 2]
    np.testing.assert_allclose(scores, [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    labels, scores = rrf([[1, 2], [2, 1]], k=0, weights=[1.0, 3.0])
    assert labels.tolist() == [2, 1]
    np.testing.assert_allclose(scores, [1 / 2 + 3, 1 + 3 / 2])
    with pytest.raises(ValueError, match="2 weights for 1"):
        rrf([[1]], weights=[1, 2])


def test_parse_weights():
    assert parse_weights("thumbnail=1,edges=0.5", ["thumbnail", "edges", "saliency"]) == {
        "thumbnail": 1.0,
        "edges": 0.5,
        "saliency": 1.0,
    }
    with pytest.raises(ValueError, match="unknown view 'colour'"):
        parse_weights("colour=2", ["thumbnail"])
    with pytest.raises(ValueError, match="must be > 0"):
        parse_weights("thumbnail=0", ["thumbnail"])
    with pytest.raises(ValueError, match="<= 1e"):
        parse_weights("thumbnail=inf", ["thumbnail"])
    with pytest.raises(ValueError, match="not a number"):
        parse_weights("thumbnail=big", ["thumbnail"])
    assert normalize_weights({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}


def test_binary_codes_and_hamming_similarity():
    vectors = np.array([[1, -1, 1, 1, -1, 1, 1, 1, -1], [-1, 1, -1, -1, 1, -1, -1, -1, 1]], np.float32)
    codes = binary_codes(vectors)
    assert codes.shape == (2, 2) and codes.dtype == np.uint8
    np.testing.assert_allclose(hamming_similarity(codes[0], codes, bits=9), [1.0, -1.0])
    # centring splits all-positive vectors instead of giving them all the same bits
    positive = np.abs(np.random.default_rng(5).standard_normal((10, 8)))
    assert len({bytes(c) for c in binary_codes(positive)}) == 1
    assert len({bytes(c) for c in binary_codes(positive, positive.mean(axis=0))}) > 1
