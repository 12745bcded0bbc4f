#!/usr/bin/env python3
"""Scene queries: OTHER photos of products, placed inside real busy scenes, searched against a
clean catalog and scored by category.

The catalog is a trained product model (run-training.sh) of clean items, e.g. the held-out
TRAIN-split catalog of benchmarks/make_heldout_catalog.py. Each query is a TEST-split item of the
same source (`--source`: Fashion-MNIST, or scikit-learn's digits; never in the catalog) upscaled
like the catalog's photos, cut out by its own intensity (soft mask) and pasted at a seeded scale
(30-60% of the scene's short side) and place onto a crop of a real photo (scikit-image astronaut,
coffee, chelsea, rocket; scikit-learn china, flower).
Queries go through the product's query path (simfusion.pipeline: the catalog's detector,
thumbnail, views, encoders); relevant = catalog items of the same category.

Queries the detector is unsure of get the product's catalog-guided crops (simfusion.search.crops,
predict.py's default `--crops guided`, chosen by the index's fused score with the clusters term at
FIT_SHARE, and ranked with it at GUIDED_SHARE, as Catalog does); every view's row and
the fusions' rows use those crops, except the row that shows the tuned fusion from the detector's
box alone. The "end to end" rows are each of the index's views as the product gives it alone
(`predict.py --views VIEW`): that view also chooses the crop, by its own fit to the catalog. The
crops are encoded once and scored for every chooser.

Rows: every single view of the model (on the default's crops, and end to end), equal-weight
fusion, the tuned fusion the index was built with (with and without guided crops), the index's
ranking, and the raw pixels of a PERFECT crop (the pasted item's true box) as the baseline.

    python benchmarks/bench_scene_queries.py --model /tmp/heldout_out/model --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._report import load_average, machine, publish, today  # noqa: E402

SECTION = "scene_queries"
SCENE = 320  # scenes are square crops resized to SCENE px
ITEMS = {"fashion": "Fashion-MNIST", "digits": "scikit-learn digits"}


def scenes() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")]
    return photos + list(load_sample_images().images)


def compose(item: np.ndarray, scene: np.ndarray, rng: np.random.Generator, *, item_size: int = 112):
    """The item (28x28 gray, light on black) pasted with a soft mask into a crop of the scene;
    returns (image, true box [x0, y0, x1, y1])."""
    import cv2

    h, w = scene.shape[:2]
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    out = cv2.resize(scene[y : y + side, x : x + side], (SCENE, SCENE), interpolation=cv2.INTER_AREA)
    big = cv2.resize(item, (item_size, item_size), interpolation=cv2.INTER_LANCZOS4)
    size = int(SCENE * rng.uniform(0.3, 0.6))
    product = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = np.clip(cv2.GaussianBlur(product, (0, 0), 1.0) / 40.0, 0, 1)[..., None]
    py, px = rng.integers(0, SCENE - size + 1, 2)
    region = out[py : py + size, px : px + size].astype(np.float32)
    out[py : py + size, px : px + size] = (alpha * product[..., None] + (1 - alpha) * region).astype(np.uint8)
    return out, [int(px), int(py), int(px + size), int(py + size)]


def encode_queries(catalog_search, images: list[np.ndarray], views: list[str], *, batch: int = 16) -> dict:
    """Each query's maps per view from the detector's box (`detector`), from the crop the default
    search answers from (`default`), and, for each of the index's views, from the crop that view
    alone would choose (`own:VIEW`, what `predict.py --views VIEW` does); `records`, a record a query
    as Catalog.guide leaves it (`query_box`: the default's crop, for the unsure ones). The candidate
    windows are encoded once and scored for every chooser; each chooser then nudges its own pick
    (Catalog.pick_crop) with its own views."""
    from simfusion.pipeline import encode_images
    from simfusion.search.crops import crop_kind, is_unsure

    own_views = list(catalog_search.index.views)
    keys = ["detector", "default", *(f"own:{view}" for view in own_views)]
    parts: dict = {key: {view: [] for view in views} for key in keys}
    records: list[dict] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        got, found = encode_images(
            chunk, model_save_path=catalog_search.path, views=views, pipeline=catalog_search.pipeline
        )
        for row, (image, result) in enumerate(zip(chunk, found, strict=True)):
            own = {view: got[view][row] for view in views}
            chosen = dict.fromkeys(keys, own)  # the detector's box
            records.append({})
            if is_unsure(result):
                boxes, crops = catalog_search.crop_maps(image, result, own)
                box, refined = catalog_search.pick_crop(image, boxes, crops)  # as Catalog.guide
                extra = [view for view in views if view not in refined]  # stored, left out of the index
                if extra:
                    got_extra = catalog_search.encode_crops(image, [box], views=extra)
                    refined.update({view: got_extra[view][0] for view in extra})
                records[-1]["query_box"], chosen["default"] = box, refined
                records[-1]["query_crop"] = crop_kind(boxes, box)  # as Catalog.guide
                for view in own_views:
                    _, refined = catalog_search.pick_crop(image, boxes, crops, views=[view])
                    chosen[f"own:{view}"] = {**own, **refined}  # only its own view is read
            for key in keys:
                for view in views:
                    parts[key][view].append(chosen[key][view])
    out: dict = {key: {view: np.stack(maps) for view, maps in parts[key].items()} for key in keys}
    out.update({key: out[key][key[4:]] for key in keys if key.startswith("own:")})
    out["records"] = records
    return out


def main(argv: list[str] | None = None) -> int:
    import cv2

    from benchmarks._items import SOURCES, load_items
    from simfusion.evaluate.protocol import BASELINE_SIZE, index_tuning, score_rankings
    from simfusion.io.images import load_image
    from simfusion.io.records import record_id
    from simfusion.io.store import FeatureStore, store_path
    from simfusion.search.build import catalog_vectors
    from simfusion.search.catalog import Catalog
    from simfusion.search.crops import UNSURE_SCORE
    from simfusion.search.guided import search_as_answered
    from simfusion.search.vectors import fit_transform, fuse, l2_normalize, transform

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder of a clean catalog")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--source", choices=SOURCES, default="fashion", help="the items' source (its test split)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_write", action="store_true")
    args = parser.parse_args(argv)
    began, load = time.perf_counter(), load_average()
    rng = np.random.default_rng(args.seed)
    images, names, _ = load_items(args.source, "test")
    picks = rng.choice(len(images), args.queries, replace=False)
    backgrounds = scenes()
    composed = [compose(images[i], backgrounds[int(rng.integers(len(backgrounds)))], rng) for i in picks]
    query_labels = np.array([names[i] for i in picks])

    with FeatureStore(store_path(args.model)) as store:
        views = store.views
        ids, pooled = catalog_vectors(store, views)
        records = {record_id(r): r for r in store.records()}
    catalog_labels = np.array([str(records[key].get("category")) for key in ids])
    started = time.perf_counter()
    catalog_search = Catalog.open(args.model)
    pipeline = catalog_search.pipeline
    encoded = encode_queries(catalog_search, [c[0] for c in composed], views)
    guided = sum("query_box" in record for record in encoded["records"])
    query_seconds = time.perf_counter() - started
    detector_queries = transform(encoded["detector"], {})
    queries = transform(encoded["default"], {})

    def ranked(q, c, k=100):
        return np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :k]

    rankings = {view: ranked(queries[view], pooled[view]) for view in views}
    for view in catalog_search.index.views:  # the product with `--views VIEW`: its own crops too
        own = transform({view: encoded[f"own:{view}"]}, {})[view]
        rankings[f"{view} alone, end to end (--views {view})"] = ranked(own, pooled[view])
    rankings["fused: equal weights"] = ranked(
        fuse(queries, dict.fromkeys(views, 1.0)), fuse(pooled, dict.fromkeys(views, 1.0))
    )
    tuning = index_tuning(args.model)
    if tuning:
        kept = tuning["views"]
        catalog, params = fit_transform({v: pooled[v] for v in kept}, whiten=tuning["whiten"])
        weights = {v: tuning["weights"][v] for v in kept}
        detector_q = transform({v: detector_queries[v] for v in kept}, params)
        rankings["fused: tuned, the detector's box only (--crops detector)"] = ranked(
            fuse(detector_q, weights), fuse(catalog, weights)
        )
        # as Catalog.rank: a guided query with the index's scene profile (simfusion.search.scene)
        index, answered = catalog_search.index, encoded["records"]
        row_of = {key: row for row, key in enumerate(ids)}
        vectors = transform({v: queries[v] for v in index.views}, index.params)
        shares = [catalog_search.share_of(record) for record in answered]
        for name, clusters in (("", False), (" + clusters", True)):
            if clusters and not index.clusters_share:
                continue
            hits = search_as_answered(index, vectors, answered, shares=shares, k=100, clusters=clusters)
            rankings[f"fused: tuned{name} (the index's ranking)"] = np.array(
                [[row_of[hit["id"]] for hit in found] for found in hits]
            )
    thumbs = np.stack(
        [
            cv2.resize(
                load_image(records[key]["thumbnail"]),
                (BASELINE_SIZE, BASELINE_SIZE),
                interpolation=cv2.INTER_AREA,
            )
            for key in ids
        ]
    )
    crops = np.stack(
        [
            cv2.resize(
                image[b[1] : b[3], b[0] : b[2]], (BASELINE_SIZE, BASELINE_SIZE), interpolation=cv2.INTER_AREA
            )
            for image, b in composed
        ]
    )
    flat = lambda x: l2_normalize(x.reshape(len(x), -1).astype(np.float32))  # noqa: E731
    rankings["baseline: raw pixels of a perfect crop"] = ranked(flat(crops), flat(thumbs))

    # score_rankings scores catalog rows against catalog labels: put the queries' labels in front
    all_labels = np.concatenate([query_labels, catalog_labels])
    shifted = {name: r + len(query_labels) for name, r in rankings.items()}
    results = score_rankings(shifted, all_labels, np.arange(len(query_labels)), ks=(10, 100))
    from simfusion.evaluate.report import format_table

    table = format_table({m: {key: v[key] for key in ("P@10", "mAP@100")} for m, v in results.items()})
    if tuning:
        weights_line = (
            "Tuned weights (index meta): " + json.dumps(tuning["weights"]) + f"; whiten {tuning['whiten']}."
        )
    else:
        weights_line = "The index was built with --no_tune."
    detector = pipeline.detector or "default"
    text = f"""## Scene queries ({ITEMS[args.source]}): other photos of products in busy scenes, clean catalog

Catalog: `{args.model}` ({len(ids):,} items, views {", ".join(views)}).
{args.queries} queries (seed {args.seed}): {ITEMS[args.source]} TEST items pasted at 30-60% of a {SCENE} px
crop of real photos (scikit-image astronaut, coffee, chelsea, rocket; scikit-learn china, flower),
through the product's query path with the catalog's detector ({detector}) and catalog-guided crops
for the {guided} queries it was unsure of (score < {UNSURE_SCORE}); relevant = catalog items of the
query's category.
The baseline gets a perfect crop (the true box) and compares raw pixels ({BASELINE_SIZE} px) with the
catalog's thumbnails.

{table}

{weights_line} Queries encoded in {query_seconds:.0f} s. Machine: {machine()}; load average at the
start {load}; whole run {time.perf_counter() - began:.0f} s. Date: {today()}.

Reproduce: `python benchmarks/bench_scene_queries.py --model MODEL --queries {args.queries} \\
--seed {args.seed} --source {args.source}`
"""
    section = SECTION if args.source == "fashion" else f"{SECTION}_{args.source}"
    return publish(section, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
