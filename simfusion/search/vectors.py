"""Vector math of the fused ranking: pooling, normalisation, PCA-whitening, fusion, binary codes.

Pure functions over numpy arrays; the FAISS indexes that use them live in `simfusion.search.index`. A
catalog item is one vector per view; a view's vector is its encoder's feature map pooled, L2
normalised and optionally PCA-whitened (fitted on the catalog, then frozen, so items added
later go through the very same transform).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

POOLINGS = ("avgmax", "avg", "max", "gem", "flatten")
FUSIONS = ("early", "late", "rrf")
FUSED = "fused"  # the name of the fused ranking beside the views' names
RRF_K = 60
GEM_POWER = 3.0
_EPS = 1e-12


def pool_features(maps: np.ndarray, *, pooling: str = "avgmax", gem_power: float = GEM_POWER) -> np.ndarray:
    """Pool feature maps (N, h, w, c) to vectors (N, d) float32.

    `avgmax` (the default) concatenates the L2-normalised average and max pools, so the global
    layout and the strongest local responses weigh the same; `gem` is generalised mean pooling of
    the positive part; `flatten` keeps every position (d = h*w*c, sensitive to where things are).
    Vectors (N, d) pass through unchanged, so already pooled features work too.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    array = np.asarray(maps, dtype=np.float32)
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"feature maps must be (N, h, w, c) or vectors (N, d), not {array.shape}")
    if pooling == "flatten":
        return array.reshape(len(array), -1)
    if pooling == "avg":
        return array.mean(axis=(1, 2))
    if pooling == "max":
        return array.max(axis=(1, 2))
    if pooling == "gem":
        if gem_power <= 0:
            raise ValueError(f"gem_power must be > 0, not {gem_power}")
        positive = np.maximum(array, 1e-6).astype(np.float64)
        return np.power(np.mean(positive**gem_power, axis=(1, 2)), 1.0 / gem_power).astype(np.float32)
    return np.concatenate(
        [l2_normalize(array.mean(axis=(1, 2))), l2_normalize(array.max(axis=(1, 2)))], axis=1
    )


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norms, _EPS)).astype(np.float32)


def fit_whitening(
    vectors: np.ndarray,
    *,
    dim: int | None = None,
    power: float = 0.5,
    shrinkage: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Fit PCA-whitening on catalog vectors (N, d); returns the arrays `apply_whitening` needs.

    Components are scaled by (variance + shrinkage * mean variance) ** -power: power 0.5 is full
    whitening, smaller powers whiten less; the shrinkage keeps near-zero variance directions (few
    catalog items, N < d) from being blown up into noise. `dim` keeps the leading components
    (default all that the catalog supports, min(N, d)).
    """
    from sklearn.decomposition import PCA

    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"whitening needs at least 2 vectors (N, d), not {array.shape}")
    if not 0 < power <= 1:
        raise ValueError(f"whitening power must be in (0, 1], not {power}")
    if shrinkage < 0:
        raise ValueError(f"whitening shrinkage must be >= 0, not {shrinkage}")
    limit = min(array.shape)
    dim = limit if dim is None else dim
    if not 0 < dim <= limit:
        raise ValueError(f"whitening dim must be in 1..{limit} (catalog size and vector length), not {dim}")
    # a full SVD of a few thousand vectors of thousands of dimensions takes many seconds: keeping a
    # few components (dim well below the limit) needs only a randomized one
    full = limit <= 2048 and dim > limit // 4
    pca = PCA(n_components=dim, svd_solver="full" if full else "randomized", random_state=seed)
    pca.fit(array)
    variance = pca.explained_variance_.astype(np.float64)
    scale = np.power(variance + shrinkage * max(variance.mean(), _EPS) + _EPS, -power)
    return {
        "mean": pca.mean_.astype(np.float32),
        "components": pca.components_.astype(np.float32),
        "scale": scale.astype(np.float32),
    }


def apply_whitening(vectors: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Project on the fitted components, scale, L2-normalise: (N, d) -> (N, dim) float32."""
    array = np.asarray(vectors, dtype=np.float32)
    mean, components = params["mean"], params["components"]
    if array.shape[-1] != mean.shape[0]:
        raise ValueError(
            f"vectors have {array.shape[-1]} dimensions; the whitening was fitted on {mean.shape[0]}"
        )
    return l2_normalize(((array - mean) @ components.T) * params["scale"])


def view_vectors(
    maps: np.ndarray, *, pooling: str = "avgmax", whitening: Mapping[str, np.ndarray] | None = None
) -> np.ndarray:
    """One view's search vectors: pool, L2-normalise, whiten with frozen params when given."""
    vectors = l2_normalize(pool_features(maps, pooling=pooling))
    return vectors if whitening is None else apply_whitening(vectors, whitening)


def fit_transform(
    maps_by_view: Mapping[str, np.ndarray],
    *,
    pooling: str = "avgmax",
    whiten: bool = False,
    whiten_dim: int | None = None,
    power: float = 0.5,
    shrinkage: float = 0.1,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Vectors of every view of a catalog, and the fitted params (flat `view/name` keys, for npz).

    The params always hold each view's `center` (the catalog mean of its final vectors), which the
    binary codes subtract so their sign bits split the catalog rather than all being 1.
    """
    vectors, params = {}, {}
    for view, maps in maps_by_view.items():
        base = l2_normalize(pool_features(maps, pooling=pooling))
        if whiten:
            dim = None if whiten_dim is None else min(whiten_dim, *base.shape)
            fitted = fit_whitening(base, dim=dim, power=power, shrinkage=shrinkage)
            params.update({f"{view}/{name}": value for name, value in fitted.items()})
            base = apply_whitening(base, fitted)
        params[f"{view}/center"] = base.mean(axis=0).astype(np.float32)
        vectors[view] = base
    return vectors, params


def transform(
    maps_by_view: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray], *, pooling: str = "avgmax"
) -> dict[str, np.ndarray]:
    """Vectors of new items (queries, catalog additions) with the params `fit_transform` fitted."""
    out = {}
    for view, maps in maps_by_view.items():
        whitening = whitening_params(params, view)
        out[view] = view_vectors(maps, pooling=pooling, whitening=whitening)
    return out


def whitening_params(params: Mapping[str, np.ndarray], view: str) -> dict[str, np.ndarray] | None:
    """The whitening arrays of one view out of the flat params, or None when it is not whitened."""
    keys = ("mean", "components", "scale")
    if f"{view}/mean" not in params:
        return None
    return {key: np.asarray(params[f"{view}/{key}"]) for key in keys}


class UnknownViewError(ValueError):
    """A view name that the store or the index does not hold."""


def check_views(views: Sequence[str], known: Sequence[str], *, holder: str) -> None:
    """Raise UnknownViewError naming the views that `holder` (the store, the index) lacks."""
    unknown = [view for view in views if view not in known]
    if unknown:
        raise UnknownViewError(f"unknown view(s) {', '.join(unknown)}: {holder} has {', '.join(known)}")


MAX_WEIGHT = 1e6  # larger (or inf) would overflow the fused scores


def parse_weights(text: str | None, views: Sequence[str]) -> dict[str, float]:
    """`thumbnail=1,edges=0.5` -> {view: weight}; views not named get 1.0.

    Raises ValueError for an unknown view, a bad number or a weight that is not positive.
    """
    weights = {view: 1.0 for view in views}
    if not text:
        return weights
    for item in text.split(","):
        if not item.strip():
            continue
        view, sep, value = item.partition("=")
        view = view.strip()
        if not sep:
            raise ValueError(f"a weight is view=number, not {item!r}")
        if view not in weights:
            raise ValueError(f"weight for unknown view {view!r}: the views are {', '.join(views)}")
        try:
            weights[view] = float(value)
        except ValueError:
            raise ValueError(f"weight of {view!r} is not a number: {value!r}") from None
        if not 0 < weights[view] <= MAX_WEIGHT:
            raise ValueError(
                f"weight of {view!r} must be > 0 and <= {MAX_WEIGHT:g} (leave a view out by naming the "
                "others in views instead)"
            )
    return weights


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1, so fused scores stay on the cosine scale [-1, 1]."""
    total = float(sum(weights.values()))
    if not total > 0 or any(not w > 0 for w in weights.values()):
        raise ValueError(f"weights must all be > 0, not {dict(weights)}")
    return {view: float(w) / total for view, w in weights.items()}


def fuse(vectors_by_view: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Early fusion: concatenate unit vectors of each view scaled by sqrt(normalised weight).

    The inner product of two fused vectors is then the weighted sum of the per-view cosines.
    """
    share = normalize_weights({view: weights[view] for view in vectors_by_view})
    parts = [
        np.sqrt(share[view]) * np.asarray(vectors, np.float32) for view, vectors in vectors_by_view.items()
    ]
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def fuse_scores(scores_by_view: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Late fusion: the weighted sum (weights normalised to 1) of per-view similarities."""
    share = normalize_weights({view: weights[view] for view in scores_by_view})
    total = None
    for view, scores in scores_by_view.items():
        part = share[view] * np.asarray(scores, dtype=np.float64)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no views to fuse")
    return total.astype(np.float32)


def rrf(
    rankings: Sequence[Sequence[int]], *, k: int = RRF_K, weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of ranked lists of item labels, best first.

    score(item) = sum over lists of weight / (k + rank), rank counting from 1; an item missing from a
    list gets nothing from it. Returns (labels, scores), best first; ties keep first-seen order.
    """
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, not {k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, label in enumerate(ranking, 1):
            scores[int(label)] = scores.get(int(label), 0.0) + weight / (k + rank)
    labels = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    order = np.argsort(-values, kind="stable")
    return labels[order], values[order]


def binary_codes(vectors: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Sign bits of centred vectors (N, d), packed to uint8 (N, ceil(d / 8)), zero-padded."""
    array = np.asarray(vectors, dtype=np.float32)
    if center is not None:
        array = array - center
    return np.packbits(array > 0, axis=1)


def hamming_similarity(query: np.ndarray, codes: np.ndarray, *, bits: int) -> np.ndarray:
    """1 - 2 * Hamming / bits between one packed code (b,) and codes (M, b): 1 same, -1 opposite.

    For sign bits of centred vectors it falls as the angle grows (1 - 2 * angle / pi for isotropic
    data), so it ranks like the cosine; padding bits are equal everywhere, so they never count.
    """
    if bits <= 0:
        raise ValueError(f"bits must be > 0, not {bits}")
    differ = np.unpackbits(np.bitwise_xor(np.asarray(codes, np.uint8), np.asarray(query, np.uint8)), axis=-1)
    return (1.0 - 2.0 * differ.sum(axis=-1) / bits).astype(np.float32)
