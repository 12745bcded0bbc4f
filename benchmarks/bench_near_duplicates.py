#!/usr/bin/env python3
"""Benchmark: finding near-duplicates of real photos, the pipeline against perceptual hashing.

Each bundled colour photo (local_test_data/photos, 10 photos) gets seeded variants: a random crop
(70-90% of each side), a horizontal flip, a rotation (5-15 degrees either way, reflected border),
a copy at half the scale, a colour jitter (brightness, contrast, saturation, hue), a JPEG at quality
25, a copy pasted at 45-65% of the size onto a real texture (scikit-image's brick, grass, gravel)
and a combination (crop, flip, small rotation, jitter, JPEG 50). The catalog is the originals and
all variants, in a seeded random order (so ties, common with 64-bit hashes, break at random).

Every item is a query against all the others (it is left out of its own results); relevant =
made from the same photo. mAP is over the full ranking (AP@k with k = catalog size - 1, so every
relevant item counts: the usual AP), P@k with k = the number of variants per photo (which is
also the number of relevant items, so P@k = R-precision). simfusion.evaluate.metrics computes both.

The pipeline runs stage script by stage script, each in its own process:
object_detection.py -> thumbnail.py -> saliency.py -> train.py (a short training at 64 px) ->
fusion.py. The queries then go through predict's own in-memory path (simfusion.pipeline: detection,
thumbnail, views, encoders, the index's frozen normalisation) and are searched in the fused
index: the fused ranking and each view alone. It runs once with the default detector and once
with `full` (no detection: the whole photo). imagehash's PHash, DHash, AHash and WHash (what
imagededup offers) rank by Hamming distance on the same files. Ninety images move a method's mAP
by 0.01-0.04 from one seeded catalog to the next, so it runs several seeds (`--seeds`, default
0,1,2) and reports each one's mAP and their mean, with every variant's column for the first seed.
Writes section `near_duplicates` of BENCHMARKS.md.

    python benchmarks/bench_near_duplicates.py [--seeds 0,1,2] [--epochs 5] [--size 128]
        [--detectors objectness,full]
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import ROOT, load_average, machine, publish, today  # noqa: E402

log = logging.getLogger("bench_near_duplicates")

SECTION = "near_duplicates"
PHOTOS = os.path.join(ROOT, "local_test_data", "photos")
VARIANTS = ("crop", "flip", "rotate", "scale", "jitter", "jpeg", "paste", "combo")
TEXTURES = ("brick", "grass", "gravel")
# name -> imagehash function (imagededup's PHash, DHash, AHash, WHash)
DEFAULT = "fused: tuned + clusters (the default)"
HASHES = {"phash": "phash", "dhash": "dhash", "ahash": "average_hash", "whash": "whash"}


# ------------------------------------------------------------------------------------ variants


def load_sources(folder: str = PHOTOS) -> list[tuple[str, str]]:
    """(name, path) of every .jpg in `folder`, sorted by name."""
    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    if not paths:
        raise ValueError(f"no .jpg photos in {folder}: rebuild local_test_data with make_sample_data.py")
    return [(os.path.splitext(os.path.basename(path))[0], path) for path in paths]


def load_textures() -> list[np.ndarray]:
    """scikit-image's bundled brick, grass and gravel textures as uint8 RGB (those installed)."""
    from skimage import data

    out = []
    for name in TEXTURES:
        try:
            gray = getattr(data, name)()
        except Exception as exc:  # a texture that is not installed: use the others
            log.warning("texture %s is not available (%s)", name, exc)
            continue
        out.append(np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=2))
    if not out:
        raise ValueError("no scikit-image texture is installed for the pasted variant")
    return out


def random_crop(
    image: np.ndarray, rng: np.random.Generator, low: float = 0.7, high: float = 0.9
) -> np.ndarray:
    height, width = image.shape[:2]
    h, w = int(height * rng.uniform(low, high)), int(width * rng.uniform(low, high))
    y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return np.ascontiguousarray(image[y : y + h, x : x + w])


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, same size, the border reflected (no black corners to match on)."""
    import cv2

    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def scale(image: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0) -> np.ndarray:
    """Brightness and contrast +-25%, saturation +-40%, hue +-12 degrees (times `strength`)."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6) * strength) % 180  # OpenCV hue: 2 degrees a step
    hsv[..., 1] *= 1 + rng.uniform(-0.4, 0.4) * strength
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    contrast = 1 + rng.uniform(-0.25, 0.25) * strength
    brightness = 1 + rng.uniform(-0.25, 0.25) * strength
    out = (out - out.mean()) * contrast + out.mean() * brightness
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def paste(image: np.ndarray, texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`image` shrunk to 45-65% of the canvas side, pasted at a random place on a crop of `texture`."""
    import cv2

    height, width = image.shape[:2]
    canvas = cv2.resize(texture, (width, height), interpolation=cv2.INTER_AREA).copy()
    small = scale(image, rng.uniform(0.45, 0.65))
    h, w = small.shape[:2]
    y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    canvas[y : y + h, x : x + w] = small
    return canvas


def make_variant(
    kind: str, image: np.ndarray, rng: np.random.Generator, textures: list[np.ndarray]
) -> np.ndarray:
    """One seeded variant of a uint8 RGB photo; `kind` is one of VARIANTS."""
    sign = 1 if rng.random() < 0.5 else -1
    if kind == "crop":
        return random_crop(image, rng)
    if kind == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if kind == "rotate":
        return rotate(image, sign * rng.uniform(5, 15))
    if kind == "scale":
        return scale(image, 0.5)
    if kind == "jitter":
        return colour_jitter(image, rng)
    if kind == "jpeg":
        return jpeg_roundtrip(image, 25)
    if kind == "paste":
        return paste(image, textures[int(rng.integers(len(textures)))], rng)
    if kind == "combo":
        out = random_crop(image, rng, 0.75, 0.9)[:, ::-1]
        out = rotate(np.ascontiguousarray(out), sign * rng.uniform(3, 8))
        return jpeg_roundtrip(colour_jitter(out, rng, strength=0.6), 50)
    raise ValueError(f"unknown variant {kind!r}: use one of {', '.join(VARIANTS)}")


def make_catalog(folder: str, *, seed: int = 0, photos: str = PHOTOS) -> list[dict]:
    """Write the originals and their variants under `folder` and `folder/catalog.jsonl`; the records.

    Records: {id, image, source, variant}, in a seeded random order. Variants are PNG except the
    JPEG ones, which are written as the JPEG they are.
    """
    from simfusion.io.images import load_image, save_image

    textures = load_textures()
    rng = np.random.default_rng(seed)
    records = []
    for name, path in load_sources(photos):
        image = load_image(path, channels=3)
        target = os.path.join(folder, "original", os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
        records.append({"id": f"{name}-original", "image": os.path.relpath(target, folder), "source": name,
                        "variant": "original"})  # fmt: skip
        for kind in VARIANTS:
            variant = make_variant(kind, image, rng, textures)
            suffix = ".jpg" if kind in ("jpeg", "combo") else ".png"
            target = os.path.join(folder, kind, name + suffix)
            # the JPEG variants are stored as is: re-encoding them would add another loss
            save_image(target, variant, quality=25 if kind == "jpeg" else 50 if kind == "combo" else 95)
            records.append({"id": f"{name}-{kind}", "image": os.path.relpath(target, folder), "source": name,
                            "variant": kind})  # fmt: skip
    order = rng.permutation(len(records))
    records = [records[i] for i in order]
    with open(os.path.join(folder, "catalog.jsonl"), "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return records


# ------------------------------------------------------------------------------------ rankings


def hash_rankings(records: list[dict], folder: str, methods=HASHES) -> tuple[dict[str, np.ndarray], float]:
    """Per hash method, each item's other items by Hamming distance, nearest first (rows, (N, N-1))."""
    import imagehash
    from PIL import Image

    start = time.perf_counter()
    bits: dict[str, list[np.ndarray]] = {method: [] for method in methods}
    for record in records:
        with Image.open(os.path.join(folder, record["image"])) as picture:
            picture = picture.convert("RGB")
            for method in methods:
                code = getattr(imagehash, HASHES[method])(picture)
                bits[method].append(np.asarray(code.hash, bool).reshape(-1))
    seconds = time.perf_counter() - start
    out = {}
    for method, rows in bits.items():
        codes = np.stack(rows).astype(np.int32)
        distance = (codes[:, None, :] != codes[None, :, :]).sum(axis=2).astype(np.float64)
        np.fill_diagonal(distance, np.inf)
        # stable sort: ties keep catalog order, which is random with respect to the source photo
        out[method] = np.argsort(distance, axis=1, kind="stable")[:, :-1]
    return out, seconds


def run_script(script: str, args: list[str], *, stdin: str, stdout: str, log_file: str) -> float:
    """Run a top-level stage script in its own process (records file in, records file out); seconds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, os.path.join(ROOT, script), *args]
    start = time.perf_counter()
    with open(stdin, "rb") as src, open(stdout, "wb") as dst, open(log_file, "ab") as err:
        done = subprocess.run(command, stdin=src, stdout=dst, stderr=err, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        with open(log_file, encoding="utf-8", errors="replace") as err:
            tail = err.read()[-3000:]
        raise RuntimeError(f"{script} failed (exit {done.returncode}):\n{tail}")
    return seconds


def train_pipeline(catalog: str, base: str, out: str, *, detector: str, size: int, epochs: int) -> dict:
    """run-training.sh's stages with `detector`; returns the seconds of each stage."""
    os.makedirs(out, exist_ok=True)
    shape = ["--im_height", str(size), "--im_width", str(size), "--im_channel", "3"]
    quiet = ["--no_progress", "--log_level", "WARNING"]
    views, model = os.path.join(out, "views"), os.path.join(out, "model")
    thumbnails = os.path.join(views, "thumbnail")
    stages = [  # (script, its arguments, records in, records out)
        ("object_detection.py", ["--base_image_path", base, "--detector", detector, *quiet],
         catalog, "detections.jsonl"),
        ("thumbnail.py", ["--base_image_path", base, "--output_image_path", thumbnails, *shape, *quiet],
         "detections.jsonl", "thumbnails.jsonl"),
        ("train.py", ["--base_image_path_for_model", views, "--model_save_path", model, *shape,
                      "--epochs", str(epochs), *quiet],
         "views.jsonl", "trained.jsonl"),
        ("fusion.py", ["--model_save_path", model, "--no_tune", "--no_clusters", "--log_level", "WARNING"],
         os.devnull,
         "index-equal.json"),
        ("fusion.py", ["--model_save_path", model, "--log_level", "WARNING"], os.devnull, "index.json"),
    ]  # fmt: skip
    seconds = {}
    for script, args, stdin, stdout in stages:
        if script == "train.py":  # the default views are computed from the thumbnail: no saliency stage
            shutil.copyfile(os.path.join(out, "thumbnails.jsonl"), os.path.join(out, "views.jsonl"))
        if stdout == "index.json":  # keep the equal-weight index beside the tuned one
            equal = os.path.join(model, "index-equal")
            shutil.copytree(os.path.join(model, "index"), equal, dirs_exist_ok=True)
        name = script.removesuffix(".py") + (" --no_tune" if "--no_tune" in args else "")
        seconds[name] = run_script(
            script,
            args,
            stdin=os.path.join(out, stdin),  # an absolute path (catalog, os.devnull) stays as it is
            stdout=os.path.join(out, stdout),
            log_file=os.path.join(out, "stages.log"),
        )
    return seconds


def pipeline_rankings(model: str, records: list[dict], base: str) -> tuple[dict[str, np.ndarray], dict]:
    """Rankings (catalog rows, (N, N-1)) of the fused index and of each view alone, for queries
    encoded as predict.py encodes them; and how well each query's vector matched its catalog entry."""
    from simfusion.search.catalog import Catalog
    from simfusion.search.guided import search_as_answered
    from simfusion.search.index import search
    from simfusion.search.index_files import load_index
    from simfusion.search.options import SearchOptions
    from simfusion.search.vectors import transform

    catalog = Catalog.open(model)
    tuned = catalog.index
    index = load_index(os.path.join(model, "index-equal"))  # every view, weight 1
    # fresh query records (no `box`): the query goes through detection like a new photo would
    queries = [{"id": record["id"], "image": record["image"]} for record in records]
    start = time.perf_counter()
    encoded = catalog.encode(queries, base_path=base, views=index.views)
    # predict.py's default: a query the detector is unsure of is answered from a catalog-guided
    # crop (chosen with the tuned index's views; a view it leaves out keeps the detector's box)
    catalog.guide(encoded.records, encoded.images, encoded.maps, encoded.found, SearchOptions())
    shares = [catalog.share_of(record) for record in encoded.records]
    vectors = transform(encoded.maps, index.params, pooling=index.meta["pooling"])
    encode_seconds = time.perf_counter() - start
    if len(encoded.records) != len(records):
        raise RuntimeError(f"only {len(encoded.records)} of {len(records)} queries could be encoded")
    row_of = {record["id"]: row for row, record in enumerate(records)}
    size = len(index)
    out, agreement = {}, {}
    tuned_vectors = transform(
        {view: encoded.maps[view] for view in tuned.views}, tuned.params, pooling=tuned.meta["pooling"]
    )
    methods = [
        ("fused: equal weights", index, vectors, None, False),
        ("fused: tuned", tuned, tuned_vectors, None, False),
        (DEFAULT, tuned, tuned_vectors, None, True),
    ]
    methods += [(view, index, vectors, [view], False) for view in index.views]
    for method, searched, query_vectors, views, clusters in methods:
        if clusters and not searched.clusters_share:
            continue  # a catalog too small for the clusters term: the default is 'fused: tuned'
        wanted = {view: query_vectors[view] for view in (views or searched.views)}
        if searched is tuned:  # as Catalog.rank: a guided query with the scene profile (search.scene)
            found = search_as_answered(
                searched, wanted, encoded.records, shares=shares, k=size, clusters=clusters
            )
        else:
            found = search(searched, wanted, k=size, views=views, clusters=clusters, clusters_share=shares)
        ranking, self_scores, self_first = [], [], 0
        for query, hits in zip(records, found, strict=True):
            rows = [row_of[hit["id"]] for hit in hits if hit["id"] != query["id"]]
            own = [hit["score"] for hit in hits if hit["id"] == query["id"]]
            self_scores.append(own[0] if own else np.nan)
            self_first += bool(hits) and hits[0]["id"] == query["id"]
            ranking.append(rows[: size - 1])
        out[method] = np.asarray(ranking, dtype=np.int64)
        agreement[method] = {
            "self_score": float(np.nanmean(self_scores)),
            "self_first": self_first / len(records),
        }
    detector = catalog.pipeline.detector
    guided = sum("query_box" in record for record in encoded.records)
    return out, {
        "agreement": agreement,
        "encode_seconds": encode_seconds,
        "detector": detector,
        "guided": guided,
    }


# ------------------------------------------------------------------------------------ metrics


def metrics(ranking: np.ndarray, labels: np.ndarray, kinds: np.ndarray, k: int) -> dict:
    """mAP over the full ranking, P@k, and mAP of the queries of each variant kind."""
    from simfusion.evaluate.metrics import average_precision_at_k, precision_at_k

    ranked = labels[ranking]
    ap = average_precision_at_k(ranked, labels, ranking.shape[1])
    out = {"mAP": float(ap.mean()), "P@k": precision_at_k(ranked, labels, k)}
    for kind in ("original", *VARIANTS):
        out[kind] = float(ap[kinds == kind].mean())
    return out


def table(rows: list[tuple[str, dict]], k: int) -> str:
    kinds = ("original", *VARIANTS)
    head = f"| method | mAP | P@{k} | " + " | ".join(kinds) + " |"
    rule = "|---|---:|---:|" + "---:|" * len(kinds)
    lines = [head, rule]
    for name, m in rows:
        per_kind = " | ".join(f"{m[kind]:.2f}" for kind in kinds)
        lines.append(f"| {name} | {m['mAP']:.3f} | {m['P@k']:.3f} | {per_kind} |")
    return "\n".join(lines)


def run_seed(seed: int, args: argparse.Namespace, detectors: list[str]) -> dict:
    """One seeded catalog through every detector's pipeline and the hashes: its rows and notes."""
    folder = os.path.join(args.keep, f"seed-{seed}") if args.keep else tempfile.mkdtemp(prefix="bench_nd-")
    os.makedirs(folder, exist_ok=True)
    try:
        records = make_catalog(os.path.join(folder, "catalog"), seed=seed, photos=args.photos)
        base = os.path.join(folder, "catalog")
        labels = np.array([record["source"] for record in records])
        kinds = np.array([record["variant"] for record in records])
        k = len(VARIANTS)
        log.info("seed %d: catalog of %d items from %d photos", seed, len(records), len(set(labels)))
        rows: list[tuple[str, dict]] = []
        notes: list[str] = []
        for detector in detectors:
            out = os.path.join(folder, f"pipeline-{detector.replace(':', '_')}")
            catalog = os.path.join(base, "catalog.jsonl")
            stage_seconds = train_pipeline(
                catalog, base, out, detector=detector, size=args.size, epochs=args.epochs
            )
            rankings, info = pipeline_rankings(os.path.join(out, "model"), records, base)
            label = "detection" if detector != "full" else "no detection"
            for method, ranking in rankings.items():
                rows.append((f"pipeline ({label}: {detector}), {method}", metrics(ranking, labels, kinds, k)))
                print(f"seed {seed}, {rows[-1][0]}: mAP {rows[-1][1]['mAP']:.3f}", file=sys.stderr)
            fused = info["agreement"].get(DEFAULT) or info["agreement"]["fused: tuned"]
            notes.append(
                f"`{detector}`: stages {', '.join(f'{s} {t:.0f} s' for s, t in stage_seconds.items())}; "
                f"{len(records)} queries encoded in memory in {info['encode_seconds']:.0f} s "
                f"({info['guided']} of them the detector was unsure of, answered from guided crops); "
                f"a query's fused similarity to its own catalog entry (the in-memory query path against "
                f"the stage scripts' files): mean {fused['self_score']:.3f}; its own entry ranks first for "
                f"{fused['self_first']:.0%} of the queries (a twin, such as the half-scale copy, which "
                "makes the same thumbnail, can tie or edge ahead)"
            )
        hashes, hash_seconds = hash_rankings(records, base)
        for method, ranking in hashes.items():
            rows.append((f"imagehash {method} (64 bits, Hamming)", metrics(ranking, labels, kinds, k)))
        notes.append(f"imagehash: all four hashes of the {len(records)} files in {hash_seconds:.1f} s")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "notes": notes, "items": len(records), "sources": len(set(labels)), "k": k}


def seeds_table(runs: dict[int, dict]) -> tuple[str, list[str]]:
    """mAP of every method under each seed and their mean; and, per pipeline, the default's margin
    over the single view with the best mean."""
    seeds = list(runs)
    names = [name for name, _ in runs[seeds[0]]["rows"]]
    maps = {name: [dict(runs[seed]["rows"])[name]["mAP"] for seed in seeds] for name in names}
    head = "| method | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean |"
    lines = [head, "|---|" + "---:|" * (len(seeds) + 1)]
    for name in names:
        values = maps[name]
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {name} | {cells} | {np.mean(values):.3f} |")
    margins = []
    for prefix in sorted({name.split("), ")[0] + ")" for name in names if name.startswith("pipeline")}):
        default = f"{prefix}, {DEFAULT}"
        views = [n for n in names if n.startswith(prefix) and ", fused" not in n]
        if default not in maps or not views:
            continue
        best = max(views, key=lambda n: np.mean(maps[n]))
        margin = np.mean(maps[default]) - np.mean(maps[best])
        margins.append(
            f"{prefix}: the default {np.mean(maps[default]):.3f} against its best view "
            f"{best.split('), ')[1]} {np.mean(maps[best]):.3f} (mean over seeds): {margin:+.3f}; "
            "seed by seed "
            + ", ".join(f"{a - b:+.3f}" for a, b in zip(maps[default], maps[best], strict=True))
        )
    return "\n".join(lines), margins


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=PHOTOS, help="folder of source photos (.jpg)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each makes its own catalog")
    parser.add_argument("--seed", type=int, help="one seed only (the same as --seeds N)")
    parser.add_argument(
        "--size", type=int, default=128, help="thumbnail side for the pipeline (run-training.sh's default)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="autoencoder training epochs")
    parser.add_argument(
        "--detectors", default="objectness,full", help="pipeline runs, one per detector ('' for hashes only)"
    )
    parser.add_argument("--keep", help="keep the catalogs and pipeline outputs in this folder")
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.size < 16 or args.epochs < 1 or not seeds:
        parser.error("--size must be >= 16, --epochs >= 1, and at least one seed given")
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    load = load_average()
    started = time.perf_counter()
    runs = {seed: run_seed(seed, args, detectors) for seed in seeds}
    text = report(runs, args, detectors, load=load, total=time.perf_counter() - started)
    return publish(SECTION, text, write=not args.no_write)


def report(runs: dict[int, dict], args: argparse.Namespace, detectors: list[str], *, load, total) -> str:
    seeds = list(runs)
    first = runs[seeds[0]]
    k, items = first["k"], first["items"]
    command = (
        f"python benchmarks/bench_near_duplicates.py --seeds {','.join(map(str, seeds))} --size {args.size} "
        f"--epochs {args.epochs} --detectors {','.join(detectors) or repr('')}"
    )
    parts = [
        "## near_duplicates",
        "",
        f"{items} images a seed: the {first['sources']} bundled colour photos (local_test_data/photos) "
        f"and {k} seeded variants of each: crop 70-90%, horizontal flip, "
        "rotation 5-15 deg (reflected border), scale 0.5, colour jitter (brightness, contrast "
        "+-25%, saturation +-40%, hue +-12 deg), JPEG quality 25, pasted at 45-65% size onto a "
        "scikit-image texture (brick, grass, gravel), and a combination (crop, flip, rotation "
        "3-8 deg, milder jitter, JPEG 50). Every image queries all the others (itself left out); "
        f"relevant = same source photo ({k} per query). mAP: average precision over the full "
        f"ranking of {items - 1} items (`average_precision_at_k` with k = catalog size - 1), "
        f"P@{k} = R-precision; the variant columns are the mAP of the queries of that kind.",
        "",
        "Pipeline: the stage scripts in turn (object_detection.py, thumbnail.py at "
        f"{args.size}x{args.size} RGB, train.py {args.epochs} epochs with the default objective and "
        "views (all computed from the thumbnail, so no saliency stage), then fusion.py twice: "
        "`--no_tune --no_clusters` (every view weighs 1: 'fused: equal weights', and the single "
        "views) and the default, tuned without labels on augmented copies of catalog thumbnails "
        "('fused: tuned': its weights alone; 'fused: tuned + clusters': with the clusters term, "
        "simfusion.search.clusters, what predict.py ranks by); "
        "the queries are encoded in memory the way predict.py does (simfusion.pipeline, "
        "detection included; a query the detector is unsure of answered from a catalog-guided crop, "
        "ranked with the clusters term at its guided share) and searched with "
        "`simfusion.search.index.search`, fused and view by "
        "view. Hashes: imagehash on the files, ranked by Hamming distance; ties break in the "
        "catalog's seeded random order.",
        "",
    ]
    if len(seeds) > 1:
        table_text, margins = seeds_table(runs)
        parts += [
            f"mAP under each seed (each seed draws its own variants of the {first['sources']} photos; "
            "one catalog this small moves a method by 0.01-0.04 from seed to seed, so the means decide):",
            "",
            table_text,
            "",
            *[f"- {line}" for line in margins],
            "",
        ]
    parts += [
        f"Seed {seeds[0]}, every variant:",
        "",
        table(first["rows"], k),
        "",
        *[f"- seed {seed}: {note}" for seed in seeds for note in runs[seed]["notes"]],
        "",
        f"Machine: {machine()}. Date: {today()}. Load average at the start: {load}. "
        f"Whole run: {total:.0f} s.",
        "",
        f"Reproduce: `{command}`",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
