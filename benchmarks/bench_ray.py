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


def pipeline(distributor: str, work: str, images: str, batch_size: int, *, name: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "SIMFUSION_DISTRIBUTOR": distributor}
    distributor = name or distributor
    out = os.path.join(work, distributor)
    common = ["--batch_size", str(batch_size), "--no_progress", "--log_level", "WARNING"]
    thumbs = [sys.executable, os.path.join(ROOT, "thumbnail.py"), "--base_image_path", images]
    thumbs += ["--output_image_path", os.path.join(out, "thumbs"), *common]
    views = [sys.executable, os.path.join(ROOT, "saliency.py"), "--edges", "canny"]
    views += [
        "--base_image_path",
        os.path.join(out, "thumbs"),
        "--output_image_path",
        os.path.join(out, "views"),
    ]
    views += common
    records = os.path.join(work, f"{name or 'records'}.jsonl")
    thumbnail_s = run(thumbs, records, os.path.join(work, f"{distributor}-thumbs.jsonl"), env)
    views_s = run(
        views,
        os.path.join(work, f"{distributor}-thumbs.jsonl"),
        os.path.join(work, f"{distributor}.jsonl"),
        env,
    )
    with open(os.path.join(work, f"{distributor}.jsonl"), encoding="utf-8") as stream:
        lines = [json.loads(line) for line in stream]
    return {"thumbnail": thumbnail_s, "views": views_s, "records": lines, "out": out}


def same_files(a: str, b: str) -> bool:
    for root, _, names in os.walk(a):
        for name in names:
            left = os.path.join(root, name)
            right = os.path.join(b, os.path.relpath(left, a))
            if not os.path.exists(right) or not filecmp.cmp(left, right, shallow=False):
                return False
    return True


def table(local: dict, ray: dict, startup: dict, images: int) -> list[str]:
    """Markdown rows: seconds, images/s and ratios per stage and for both stages."""
    rows = [(stage, local[stage], ray[stage], startup[stage]) for stage in ("thumbnail", "views")]
    rows.append(
        ("both", *(sum(run[stage] for stage in ("thumbnail", "views")) for run in (local, ray, startup)))
    )
    lines = [
        "| stage | local s | local img/s | ray (2 workers) s | ray img/s | ray / local | ray start-up s "
        "| ray / local without start-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage, a, b, c in rows:
        lines.append(
            f"| {stage} | {a:.1f} | {images / a:.1f} | {b:.1f} | {images / b:.1f} | {a / b:.2f} "
            f"| {c:.1f} | {f'{a / (b - c):.2f}' if b > c else 'n/a'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_ray-") as work:
        images = os.path.join(work, "images")
        records = make_images(images, args.images)
        with open(os.path.join(work, "records.jsonl"), "w", encoding="utf-8") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)
        results = {}
        for distributor in ("local", "ray"):
            results[distributor] = pipeline(distributor, work, images, args.batch_size)
            log.info(
                "%s: thumbnail %.1f s, views %.1f s",
                distributor,
                results[distributor]["thumbnail"],
                results[distributor]["views"],
            )
        # Ray's start-up, measured as the same run over one image
        with open(os.path.join(work, "startup.jsonl"), "w", encoding="utf-8") as out:
            out.write(json.dumps(records[0]) + "\n")
        startup = pipeline("ray", work, images, args.batch_size, name="startup")
        local, ray = results["local"], results["ray"]
        strip = [json.dumps(r).replace(local["out"], "OUT") for r in local["records"]]
        same_records = strip == [json.dumps(r).replace(ray["out"], "OUT") for r in ray["records"]]
        same = same_files(local["out"], ray["out"]) and same_files(ray["out"], local["out"])
    lines = table(local, ray, startup, args.images)
    section = "\n".join(
        [
            "## ray",
            "",
            f"{args.images} seeded 320x240 JPEGs through `thumbnail.py` (128x128) then `saliency.py --edges",
            "canny` (three views), each stage a fresh process reading and writing JSON-lines files, batch",
            f"size {args.batch_size}; `--distributor local` (one process) against `--distributor ray` (a",
            "local Ray with 2 CPUs, 2 actors, started by each stage: its start-up of several seconds is",
            "included).",
            "Ray start-up is the same ray run over one image; the last column subtracts it.",
            f"Records identical: {same_records}; every image and view file byte-identical: {same}.",
            f"Machine: {machine()}, SHARED with other engineers' jobs (load average {load} at the start),",
            "so the two workers rarely had both cores to themselves; both runs measured in this one run.",
            f"Date: {today()}.",
            "",
            *lines,
            "",
            f"Reproduce: `python benchmarks/bench_ray.py --images {args.images}`",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
    return 0 if same and same_records else 1


if __name__ == "__main__":
    sys.exit(main())
