"""Unsupervised fusion tuning: per-view weights and whitening chosen from the catalog alone.

When the index is built (fusion.py), a seeded sample of catalog thumbnails is copied with the
augmentations a query photo may show (simfusion.search.augment), the copies go through the
query path (simfusion.pipeline: views and encoders, in memory), and a small coordinate ascent
over per-view weights (and whitening on or off) maximises

    J = MRR of each copy's own source  +  category_weight * consensus precision@k.

Copies of one photo reward the views that find *the same photo*; the second term is an
unlabelled category-level signal: for sampled catalog items, the items that a majority of the
views put in their top k ("consensus neighbours") are taken as same-kind items, and the fused
ranking is scored by how many of them it puts in its own top k. A view whose removal costs less
than `tolerance` gets weight 0 and is left out of the index (its query-time cost goes with it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from simfusion.io.images import ImageError, load_image
from simfusion.io.records import record_id
from simfusion.io.store import FeatureStore, store_path
from simfusion.pipeline import encode_images, load_pipeline
from simfusion.search.augment import augmented_copies
from simfusion.search.build import catalog_vectors, check_training_run
from simfusion.search.vectors import fit_transform, transform
from simfusion.views.registry import scene_safe

log = logging.getLogger(__name__)

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
MIN_ITEMS = 50  # below this the objective is noise: every view keeps weight 1


@dataclass(frozen=True)
class TuneOptions:
    """How much tuning does: `images` sampled catalog items, `copies` each, `k` of the consensus,
    `rounds` of coordinate ascent over `grid`, whitening tried when `try_whiten`."""

    images: int = 80
    copies: int = 2
    seed: int = 0
    k: int = 10
    category_weight: float = 1.0
    rounds: int = 2
    grid: tuple[float, ...] = WEIGHT_GRID
    tolerance: float = 0.002
    try_whiten: bool = True
    max_catalog: int = 20_000
    whiten_dim: int = 256  # the whitening tried (and used when chosen) keeps this many dimensions
    batch_size: int = 32


@dataclass
class Problem:
    """Per-view similarity matrices of the copies and of the sampled originals (self masked), the
    copies' own catalog columns, and the consensus neighbours of each original."""

    copy_scores: dict[str, np.ndarray]
    own: np.ndarray
    original_scores: dict[str, np.ndarray]
    consensus: np.ndarray  # bool (originals, columns)


def consensus_neighbours(scores: Mapping[str, np.ndarray], *, k: int) -> np.ndarray:
    """Items in the top k of a majority (and at least 2) of the views: bool (queries, items)."""
    votes = None
    for matrix in scores.values():
        top = np.argpartition(-matrix, min(k, matrix.shape[1] - 1), axis=1)[:, :k]
        mask = np.zeros(matrix.shape, bool)
        np.put_along_axis(mask, top, True, axis=1)
        votes = mask.astype(np.int32) if votes is None else votes + mask
    need = max(2, (len(scores) + 1) // 2 + (len(scores) % 2 == 0))
    return votes >= min(need, len(scores))


def fused(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    total = sum(weights.values())
    out = None
    for view, matrix in scores.items():
        if weights.get(view, 0) > 0:
            part = (weights[view] / total) * matrix
            out = part if out is None else out + part
    return out


def objective(problem: Problem, weights: Mapping[str, float], *, k: int, category_weight: float) -> dict:
    """MRR of the copies' own sources, consensus precision@k, and J (their weighted sum)."""
    if not any(w > 0 for w in weights.values()):
        return {"J": -1.0, "mrr": 0.0, "consensus": 0.0}
    copies = fused(problem.copy_scores, weights)
    own = copies[np.arange(len(copies)), problem.own]
    ranks = 1 + (copies > own[:, None]).sum(axis=1)
    mrr = float(np.mean(1.0 / ranks))
    originals = fused(problem.original_scores, weights)
    top = np.argpartition(-originals, min(k, originals.shape[1] - 1), axis=1)[:, :k]
    hits = np.take_along_axis(problem.consensus, top, axis=1).sum(axis=1)
    possible = np.minimum(problem.consensus.sum(axis=1), k)
    valid = possible > 0
    precision = float(np.mean(hits[valid] / possible[valid])) if valid.any() else 0.0
    return {"J": mrr + category_weight * precision, "mrr": mrr, "consensus": precision}


def coordinate_ascent(
    problem: Problem, views: Sequence[str], options: TuneOptions, *, keep: Collection[str] = ()
) -> dict[str, float]:
    """Weights from equal ones, one view at a time over the grid; then views that add less than
    the tolerance are set to 0 (the cheapest first). A view in `keep` keeps a weight above 0."""

    def score(w):
        return objective(problem, w, k=options.k, category_weight=options.category_weight)["J"]

    weights = {view: 1.0 for view in views}
    best = score(weights)
    for _ in range(options.rounds):
        changed = False
        for view in views:
            for value in options.grid:
                if view in keep and not value > 0:
                    continue
                trial = {**weights, view: value}
                got = score(trial)
                if got > best + 1e-9:
                    weights, best, changed = trial, got, True
        if not changed:
            break
    for view in sorted(views, key=lambda v: weights[v]):
        if view not in keep and weights[view] > 0 and sum(w > 0 for w in weights.values()) > 1:
            trial = {**weights, view: 0.0}
            got = score(trial)
            if got >= best - options.tolerance:
                weights, best = trial, max(best, got)
    return weights


def scene_tuning(
    problem: Problem, plain: Problem, weights: Mapping[str, float], options: TuneOptions
) -> dict[str, Any] | None:
    """The scene profile's weights (simfusion.search.scene): when the tuned views include one that
    is not scene-safe, the coordinate ascent again over every scene-safe view (those the tuning left
    out too), their consensus neighbours found by them alone (in `plain`, the unwhitened problem);
    None otherwise. Returns {"weights", "views", "problem"} (the problem solved, for its report)."""
    kept = [view for view, weight in weights.items() if weight > 0]
    safe = [view for view in weights if scene_safe(view)]
    if not safe or all(scene_safe(view) for view in kept):
        return None
    sub = Problem(
        {view: problem.copy_scores[view] for view in safe},
        problem.own,
        {view: problem.original_scores[view] for view in safe},
        consensus_neighbours({view: plain.original_scores[view] for view in safe}, k=options.k),
    )
    chosen = coordinate_ascent(sub, safe, options)
    log.info("tune: scene profile (the scene-safe views alone): weights %s", chosen)
    return {"weights": chosen, "views": [view for view in safe if chosen[view] > 0], "problem": sub}


def sample_thumbnails(records: Sequence[Mapping[str, Any]], options: TuneOptions) -> tuple[list, list[int]]:
    """Seeded sample of the catalog's thumbnails (record order rows); unreadable ones are skipped."""
    rng = np.random.default_rng(options.seed)
    rows = np.sort(rng.choice(len(records), size=min(options.images, len(records)), replace=False))
    images, kept = [], []
    for row in rows:
        path = records[row].get("thumbnail")
        try:
            images.append(load_image(path, channels=3))
            kept.append(int(row))
        except (ImageError, OSError, TypeError) as exc:
            log.debug("tune: no thumbnail for row %d: %s", row, exc)
    return images, kept


def encode_copies(copies: Sequence[np.ndarray], model_save_path: str, views: Sequence[str], batch_size: int):
    """The copies' feature maps per view through the query path (no detection: they are thumbnails)."""
    pipeline = load_pipeline(model_save_path, detector="none")
    parts: dict[str, list[np.ndarray]] = {view: [] for view in views}
    for start in range(0, len(copies), batch_size):
        maps, _ = encode_images(
            list(copies[start : start + batch_size]),
            model_save_path=model_save_path,
            views=views,
            pipeline=pipeline,
        )
        for view in views:
            parts[view].append(maps[view])
    return {view: np.concatenate(chunks) for view, chunks in parts.items()}


def make_problem(
    pooled: Mapping[str, np.ndarray],
    query_maps: Mapping[str, np.ndarray],
    own: np.ndarray,
    originals: np.ndarray,
    *,
    pooling: str,
    whiten: bool,
    whiten_dim: int | None,
    consensus: np.ndarray,
) -> Problem:
    catalog, params = fit_transform(pooled, pooling=pooling, whiten=whiten, whiten_dim=whiten_dim)
    queries = transform(query_maps, params, pooling=pooling)
    copy_scores = {view: queries[view] @ catalog[view].T for view in catalog}
    original_scores = {}
    for view, vectors in catalog.items():
        matrix = vectors[originals] @ vectors.T
        matrix[np.arange(len(originals)), originals] = -np.inf  # an item is not its own neighbour
        original_scores[view] = matrix
    return Problem(copy_scores, own, original_scores, consensus)


def tune_fusion(
    model_save_path: str | os.PathLike,
    *,
    views: Sequence[str] | None = None,
    pooling: str = "avgmax",
    whiten_dim: int | None = None,
    options: TuneOptions | None = None,
) -> dict[str, Any]:
    """Tune per-view weights and whitening on the catalog; returns the tuning report:
    `weights` (every view, 0 for those left out), `views` (kept), `whiten`, the objective of every
    view alone, of equal weights and of the tuned fusion, and the seconds it took."""
    options = options or TuneOptions()
    start = time.perf_counter()
    model_save_path = os.fspath(model_save_path)
    with FeatureStore(store_path(model_save_path)) as store:
        check_training_run(model_save_path, store)  # the copies are encoded by the store's own run
        views = list(views or store.views)
        ids, pooled = catalog_vectors(store, views, pooling=pooling)
        by_id = {record_id(record): record for record in store.records()}
    if len(ids) > options.max_catalog:  # the similarity matrices grow with the catalog: tune on a part
        keep = np.sort(
            np.random.default_rng(options.seed + 1).choice(len(ids), options.max_catalog, replace=False)
        )
        ids = [ids[row] for row in keep]
        pooled = {view: vectors[keep] for view, vectors in pooled.items()}
    if len(ids) < MIN_ITEMS:
        raise ValueError(f"{len(ids)} catalog items are too few to tune on (at least {MIN_ITEMS})")
    records = [by_id.get(key, {}) for key in ids]
    images, rows = sample_thumbnails(records, options)
    if len(rows) < 4:
        raise ValueError(f"tuning needs at least 4 readable catalog thumbnails, found {len(rows)}")
    copies, sources, kinds = augmented_copies(images, copies=options.copies, seed=options.seed)
    query_maps = encode_copies(copies, model_save_path, views, options.batch_size)
    originals = np.asarray(rows, dtype=np.int64)
    return tune_vectors(
        pooled,
        query_maps,
        own=originals[sources],
        originals=originals,
        pooling=pooling,
        whiten_dim=whiten_dim,
        options=options,
        kinds=kinds,
        start=start,
    )


def tune_vectors(
    pooled: Mapping[str, np.ndarray],
    query_maps: Mapping[str, np.ndarray],
    *,
    own: np.ndarray,
    originals: np.ndarray,
    pooling: str = "avgmax",
    whiten_dim: int | None = None,
    options: TuneOptions | None = None,
    kinds: Sequence[str] = (),
    start: float | None = None,
) -> dict[str, Any]:
    """The tuning itself, on arrays: the catalog's pooled vectors per view, the copies' feature maps,
    each copy's own catalog row, and the catalog rows of the sampled originals (benchmarks use it
    with their own encoders)."""
    options = options or TuneOptions()
    start = time.perf_counter() if start is None else start
    views = list(pooled)
    n = len(next(iter(pooled.values())))
    encoded = time.perf_counter() - start
    whiten_dim = whiten_dim or options.whiten_dim
    plain = make_problem(
        pooled,
        query_maps,
        own,
        originals,
        pooling=pooling,
        whiten=False,
        whiten_dim=whiten_dim,
        consensus=np.zeros((len(originals), n), bool),
    )
    plain.consensus = consensus_neighbours(plain.original_scores, k=options.k)
    problems = {False: plain}
    if options.try_whiten and n > 2:
        problems[True] = make_problem(
            pooled,
            query_maps,
            own,
            originals,
            pooling=pooling,
            whiten=True,
            whiten_dim=whiten_dim,
            consensus=plain.consensus,
        )
    report = _report(
        problems, views, options, seconds_before=encoded, start=start, copies=len(own), kinds=kinds, items=n
    )
    report["whiten_dim"] = whiten_dim if report["whiten"] else None
    return report


def _report(problems, views, options, *, seconds_before, start, copies, kinds, items) -> dict[str, Any]:
    def measure(problem, weights):
        return {
            key: round(value, 4)
            for key, value in objective(
                problem, weights, k=options.k, category_weight=options.category_weight
            ).items()
        }

    results = {}
    for whiten, problem in problems.items():
        weights = coordinate_ascent(problem, views, options)
        results[whiten] = (weights, measure(problem, weights))
    whiten = max(results, key=lambda w: results[w][1]["J"])
    weights, tuned = results[whiten]
    problem = problems[whiten]
    scene = scene_tuning(problem, problems[False], weights, options)
    if scene and not all(weights[view] > 0 for view in scene["views"]):
        # the index must hold every view the scene profile weighs: tuned again, keeping those
        weights = coordinate_ascent(problem, views, options, keep=scene["views"])
        tuned = measure(problem, weights)
    report = {
        "weights": weights,
        "views": [view for view in views if weights[view] > 0],
        "whiten": bool(whiten),
        "alone": {view: measure(problem, {view: 1.0}) for view in views},
        "equal": measure(problems[False], {view: 1.0 for view in views}),
        "equal_whitened": measure(problems[True], {view: 1.0 for view in views})
        if True in problems
        else None,
        "tuned": tuned,
        "catalog_items": items,
        "copies": copies,
        "augmentations": sorted(set(kinds)),
        "encode_seconds": round(seconds_before, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "options": {**asdict(options), "grid": list(options.grid)},
    }
    if scene:
        solved = scene.pop("problem")
        report["scene"] = {**scene, "tuned": measure(solved, scene["weights"])}
    log.info(
        "tune: %d copies of %d catalog items; weights %s, whiten %s; J equal %.3f -> tuned %.3f "
        "(mrr %.3f, consensus %.3f) in %.1f s",
        copies,
        len(problem.consensus),
        weights,
        report["whiten"],
        report["equal"]["J"],
        tuned["J"],
        tuned["mrr"],
        tuned["consensus"],
        report["seconds"],
    )
    return report
