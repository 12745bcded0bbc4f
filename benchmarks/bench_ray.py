#!/usr/bin/env python3
"""Benchmark: the stages on Ray (local, 2 workers) against the single process, on the same images.

Makes N seeded 320x240 JPEG images (a few coloured shapes over noise), then runs
`thumbnail.py` (128x128) and `saliency.py --edges canny` (saliency, edges and foreground views) over
them, as subprocesses chained through a records file, once with `--distributor local` and once with
`--distributor ray` (a local Ray of 2 CPUs, started by the stage itself: its start-up is counted).
Both runs write to their own folders; the benchmark checks that they wrote the same bytes. The
whole ingestion (HED edges, objectness detection) runs at ~1.2 images/s here, too slow for 2,000
images in a bounded run, so these are the fast stages; the ratio is what carries over.

    python benchmarks/bench_ray.py [--images 2000] [--batch_size 32]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._report import load_average, machine, today, write_section  # noqa: E402

log = logging.getLogger("bench_ray")
SECTION = "ray"


def make_images(folder: str, count: int, *, seed: int = 0) -> list[dict]:
    from simfusion.io.images import save_image

    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        image = rng.integers(150, 255, size=(240, 320, 3), dtype=np.uint8)
        for _ in range(3):
            x0, y0 = rng.integers(0, 260), rng.integers(0, 180)
            w, h = rng.integers(30, 120, size=2)
            image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 200, size=3)
        name = f"img-{i:05d}.jpg"
        save_image(os.path.join(folder, name), image)
        records.append({"id": f"r{i:05d}", "image": name})
    return records


def run(command: list[str], stdin_path: str, stdout_path: str, env: dict) -> float:
    start = time.perf_counter()
    with open(stdin_path, "rb") as stdin, open(stdout_path, "wb") as stdout:
        subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def pipeline(distributor: str, work: str, images: str, batch_size: int, *, tag: str, edges: str) -> dict:
    """thumbnail.py then saliency.py over `<tag>.jsonl`, as fresh processes; seconds per stage."""
    env = {**os.environ, "PYTHONPATH": ROOT, "SIMFUSION_DISTRIBUTOR": distributor}
    out = os.path.join(work, f"{tag}-{distributor}")
    common = ["--batch_size", str(batch_size), "--no_progress", "--log_level", "WARNING"]
    thumbs = [sys.executable, os.path.join(ROOT, "thumbnail.py"), "--base_image_path", images]
    thumbs += ["--output_image_path", os.path.join(out, "thumbs"), *common]
    views = [sys.executable, os.path.join(ROOT, "saliency.py"), "--edges", edges, *common]
    views += [
        "--base_image_path",
        os.path.join(out, "thumbs"),
        "--output_image_path",
        os.path.join(out, "views"),
    ]
    thumbnail_s = run(thumbs, os.path.join(work, f"{tag}.jsonl"), out + "-thumbs.jsonl", env)
    views_s = run(views, out + "-thumbs.jsonl", out + ".jsonl", env)
    with open(out + ".jsonl", encoding="utf-8") as stream:
        lines = [json.loads(line) for line in stream]
    return {"thumbnail": thumbnail_s, "views": views_s, "records": lines, "out": out}


def compare(work: str, images: str, batch_size: int, *, tag: str, edges: str) -> dict:
    """Local then Ray over the same records; whether they wrote the same records and bytes."""
    local = pipeline("local", work, images, batch_size, tag=tag, edges=edges)
    ray = pipeline("ray", work, images, batch_size, tag=tag, edges=edges)
    for run in (local, ray):
        log.info("%s %s: thumbnail %.1f s, views %.1f s", tag, run["out"], run["thumbnail"], run["views"])
    strip = [json.dumps(r).replace(local["out"], "OUT") for r in local["records"]]
    local["same_records"] = strip == [json.dumps(r).replace(ray["out"], "OUT") for r in ray["records"]]
    local["same_files"] = same_files(local["out"], ray["out"]) and same_files(ray["out"], local["out"])
    return {"local": local, "ray": ray}


def write_records(work: str, tag: str, records: list[dict]) -> None:
    with open(os.path.join(work, f"{tag}.jsonl"), "w", encoding="utf-8") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)


def same_files(a: str, b: str) -> bool:
    for root, _, names in os.walk(a):
        for name in names:
            left = os.path.join(root, name)
            right = os.path.join(b, os.path.relpath(left, a))
            if not os.path.exists(right) or not filecmp.cmp(left, right, shallow=False):
                return False
    return True


def table(runs: dict, startup: dict, images: int, label: str) -> list[str]:
    """Rows per stage: seconds, images/s, ratio, and the ratio without Ray's extra start-up."""
    lines = []
    for stage in ("thumbnail", "views", "both"):
        a, b, extra = (
            sum(run[s] for s in ("thumbnail", "views")) if stage == "both" else run[stage]
            for run in (
                runs["local"],
                runs["ray"],
                {k: startup["ray"][k] - startup["local"][k] for k in ("thumbnail", "views")},
            )
        )
        name = f"{stage} ({label})" if stage == "views" else stage
        lines.append(
            f"| {name} | {images} | {a:.1f} | {images / a:.1f} | {b:.1f} | {images / b:.1f} | {a / b:.2f} "
            f"| {extra:.1f} | {f'{a / (b - extra):.2f}' if b > extra else 'n/a'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--hed_images", type=int, default=0, help="also saliency.py --edges hed on this many")
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_ray-") as work:
        images = os.path.join(work, "images")
        records = make_images(images, max(args.images, args.hed_images))
        write_records(work, "canny", records[: args.images])
        write_records(work, "one", records[:1])
        write_records(work, "hed", records[: args.hed_images])
        # Ray's start-up: the same runs over one image, local and ray; the difference is Ray's own
        startup = compare(work, images, args.batch_size, tag="one", edges="canny")
        runs = {"canny": compare(work, images, args.batch_size, tag="canny", edges="canny")}
        if args.hed_images:
            runs["hed"] = compare(work, images, args.batch_size, tag="hed", edges="hed")
    same = all(run["local"]["same_records"] and run["local"]["same_files"] for run in runs.values())
    lines = [
        "| stage | images | local s | local img/s | ray (2 workers) s | ray img/s | ray / local "
        "| Ray's extra start-up s | ray / local without it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table(runs["canny"], startup, args.images, "canny"),
    ]
    if "hed" in runs:
        lines += table(runs["hed"], startup, args.hed_images, "HED")[1:2]
    section = "\n".join(
        [
            "## ray",
            "",
            f"{args.images} seeded 320x240 JPEGs through `thumbnail.py` (128x128) then `saliency.py --edges",
            "canny` (three views), each stage a fresh process reading and writing JSON-lines files, batch",
            f"size {args.batch_size}; `--distributor local` (one process) against `--distributor ray` (a",
            "local Ray with 2 CPUs, 2 actors, started by each stage: its start-up of several seconds is",
            "included).",
            "Ray's extra start-up = (ray - local) over one image; the last column subtracts it. With",
            "--hed_images, `saliency.py --edges hed` (TensorFlow, HED loaded once per actor) on the first",
            "images too: the model-heavy case actors are for.",
            f"Records and every image and view file identical between local and ray: {same}.",
            f"Machine: {machine()}, SHARED with other engineers' jobs (load average {load} at the start),",
            "so the two workers rarely had both cores to themselves; both runs measured in this one run.",
            f"Date: {today()}.",
            "",
            *lines,
            "",
            f"Reproduce: `python benchmarks/bench_ray.py --images {args.images} --hed_images "
            f"{args.hed_images}`",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
