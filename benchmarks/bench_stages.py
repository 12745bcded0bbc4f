#!/usr/bin/env python3
"""Benchmark: wall time, images/s and peak memory of each pipeline stage, and of the whole ingestion.

Every stage script runs in pipeline order, each in its own process, over a catalog of N records
(default: the shipped sample catalog local_test_data/catalog.jsonl, 312 records of which 2 are
broken on purpose; `--n` repeats it, under fresh file names, up to N): object_detection.py with
the default detector, thumbnail.py, saliency.py with HED edges and again with Canny, train.py (a
few epochs: `--epochs`, default 2) and fusion.py (the index). Then predict.py answers one query
in a fresh process (start-up, models and index loading included) and `--queries` queries in one
process; the difference gives the latency of a query once everything is loaded.

Peak RSS is each stage process's own maximum resident set: every stage runs under a small
wrapper process that reads resource.getrusage(RUSAGE_CHILDREN).ru_maxrss after its one child
ended, so one stage's peak never carries over to the next. Writes section `stages` of BENCHMARKS.md.

    python benchmarks/bench_stages.py [--n 312] [--size 128] [--epochs 2] [--queries 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import ROOT, load_average, machine, publish, today  # noqa: E402
from simfusion.views.registry import default_views  # noqa: E402

log = logging.getLogger("bench_stages")

SECTION = "stages"
SAMPLE = os.path.join(ROOT, "local_test_data", "catalog.jsonl")

# Runs argv[2:] as its only child with this process's stdin/stdout/stderr, then writes
# {"rc", "seconds", "max_rss_kb"} to argv[1]. On Linux ru_maxrss is in kilobytes.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"rc": rc, "seconds": seconds, "max_rss_kb": usage.ru_maxrss}, out)
"""


def read_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as src:
        return [json.loads(line) for line in src if line.strip()]


def make_catalog(folder: str, n: int, *, sample: str = SAMPLE) -> tuple[str, str, int]:
    """A records file of `n` records and the folder its paths are relative to; and how many
    records the sample has. Beyond the sample's size the records repeat under new ids and new
    file names (symbolic links), so no stage skips an output that a repeat already wrote."""
    base = os.path.dirname(os.path.abspath(sample))
    records = read_records(sample)
    path = os.path.join(folder, "catalog.jsonl")
    if n <= len(records):
        chosen = records[:n]
    else:
        chosen, base = [], os.path.join(folder, "images")
        for copy in range((n + len(records) - 1) // len(records)):
            for record in records:
                if len(chosen) == n:
                    break
                rel = os.path.join(f"r{copy}", record["image"])
                link = os.path.join(base, rel)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(os.path.join(os.path.dirname(os.path.abspath(sample)), record["image"]), link)
                chosen.append({**record, "id": f"{record['id']}-r{copy}", "image": rel})
    with open(path, "w", encoding="utf-8") as out:
        for record in chosen:
            out.write(json.dumps(record) + "\n")
    return path, base, len(records)


def measure(script: str, args: list[str], *, stdin: str, stdout: str, log_file: str) -> dict:
    """Run a top-level script in a fresh process under the wrapper: {seconds, rss_mb}; raises if it fails."""
    result_file = stdout + ".rusage.json"
    command = [sys.executable, "-c", WRAPPER, result_file, sys.executable, os.path.join(ROOT, script), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(stdin, "rb") as src, open(stdout, "wb") as dst, open(log_file, "ab") as err:
        err.write(f"\n== {script} {' '.join(args)}\n".encode())
        err.flush()
        subprocess.run(command, stdin=src, stdout=dst, stderr=err, env=env, check=True)
    with open(result_file, encoding="utf-8") as src:
        result = json.load(src)
    if result["rc"] not in (0, 1):  # 1: some records failed (the broken samples), the others came out
        with open(log_file, encoding="utf-8", errors="replace") as err:
            tail = err.read()[-3000:]
        raise RuntimeError(f"{script} failed (exit {result['rc']}):\n{tail}")
    return {"seconds": result["seconds"], "rss_mb": result["max_rss_kb"] / 1024, "rc": result["rc"]}


def count_errors(path: str) -> int:
    return sum("error" in record for record in read_records(path))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, help="catalog records (default: the sample catalog's, 312)")
    parser.add_argument("--size", type=int, default=128, help="thumbnail side (run-training.sh's default)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per view")
    parser.add_argument("--queries", type=int, default=10, help="queries answered in one predict.py process")
    parser.add_argument("--keep", help="keep the pipeline outputs in this folder")
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if (args.n is not None and args.n < 10) or args.size < 16 or args.epochs < 1 or args.queries < 2:
        parser.error("--n must be >= 10, --size >= 16, --epochs >= 1 and --queries >= 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    load = load_average()
    started = time.perf_counter()

    folder = args.keep or tempfile.mkdtemp(prefix="bench_stages-")
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, "out")
    os.makedirs(out, exist_ok=True)
    logs = os.path.join(folder, "stages.log")
    try:
        n = args.n or len(read_records(SAMPLE))
        catalog, base, sample_size = make_catalog(folder, n)
        shape = ["--im_height", str(args.size), "--im_width", str(args.size), "--im_channel", "3"]
        quiet = ["--no_progress", "--log_level", "WARNING"]
        views = os.path.join(out, "views")
        model = os.path.join(out, "model")
        thumbnails = os.path.join(views, "thumbnail")
        epochs = f"{args.epochs} epoch" + "s" * (args.epochs > 1)
        stages = [
            ("object_detection.py (objectness)", "object_detection.py",
             ["--base_image_path", base, *quiet], catalog, "detections.jsonl"),
            ("thumbnail.py", "thumbnail.py",
             ["--base_image_path", base, "--output_image_path", thumbnails, *shape, *quiet],
             "detections.jsonl", "thumbnails.jsonl"),
            ("saliency.py (hed; not run for the default views)", "saliency.py",
             ["--base_image_path", thumbnails, "--output_image_path", views, *quiet],
             "thumbnails.jsonl", "views.jsonl"),
            ("saliency.py (canny; not run for the default views)", "saliency.py",
             ["--base_image_path", thumbnails, "--output_image_path", os.path.join(out, "views-canny"),
              "--edges", "canny", *quiet],
             "thumbnails.jsonl", "views-canny.jsonl"),
            (f"train.py ({epochs}, default views {', '.join(default_views())}: encode)", "train.py",
             ["--base_image_path_for_model", views, "--model_save_path", model, *shape,
              "--epochs", str(args.epochs), *quiet],
             "views.jsonl", "trained.jsonl"),
            ("fusion.py (index build)", "fusion.py", ["--model_save_path", model, "--log_level", "WARNING"],
             os.devnull, "index.json"),
        ]  # fmt: skip
        rows = []
        for name, script, stage_args, stdin, stdout in stages:
            stdin = stdin if os.path.isabs(stdin) else os.path.join(out, stdin)
            result = measure(script, stage_args, stdin=stdin, stdout=os.path.join(out, stdout), log_file=logs)
            errors = count_errors(os.path.join(out, stdout)) if stdout.endswith(".jsonl") else 0
            rows.append({"stage": name, "images": n, "errors": errors, **result})
            log.info("%s: %.1f s, peak RSS %.0f MB", name, result["seconds"], result["rss_mb"])

        # predict.py: queries taken from the catalog's good photos and products, as image paths
        good = [r for r in read_records(os.path.join(out, "trained.jsonl")) if "error" not in r]
        step = max(1, len(good) // args.queries)
        paths = [os.path.join(base, r["image"]) for r in good[::step][: args.queries]]
        predict = {}
        for count in (1, len(paths)):
            result = measure(
                "predict.py",
                ["--model_save_path", model, "--log_level", "WARNING", *paths[:count]],
                stdin=os.devnull, stdout=os.path.join(out, f"predict-{count}.jsonl"), log_file=logs,
            )  # fmt: skip
            predict[count] = result
            log.info(
                "predict.py, %d queries: %.1f s, peak RSS %.0f MB", count, result["seconds"], result["rss_mb"]
            )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    total = time.perf_counter() - started

    # what run-training.sh runs for the default views: the saliency stage only runs when a view needs it
    ingestion = [row for row in rows if not row["stage"].startswith("saliency.py")]
    lines = [
        "| stage | images | seconds | images/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        rate, rss = row["images"] / row["seconds"], row["rss_mb"]
        lines.append(
            f"| {row['stage']} | {row['images']:,} | {row['seconds']:.1f} | {rate:.1f} | {rss:,.0f} |"
        )
    seconds = sum(row["seconds"] for row in ingestion)
    lines.append(
        "| **whole ingestion** (detection, thumbnail, train, fusion: run-training.sh's defaults) "
        f"| {n:,} | {seconds:.1f} | {n / seconds:.1f} | {max(row['rss_mb'] for row in ingestion):,.0f} |"
    )
    many = len(paths)
    one, all_ = predict[1], predict[many]
    marginal = (all_["seconds"] - one["seconds"]) / (many - 1)
    for label, count, result in (
        ("1 query, fresh process", 1, one),
        (f"{many} queries, one process", many, all_),
    ):
        lines.append(
            f"| predict.py, {label} | {count} | {result['seconds']:.1f} | {count / result['seconds']:.2f} "
            f"| {result['rss_mb']:,.0f} |"
        )
    errors = max(row["errors"] for row in rows)
    command = "python benchmarks/bench_stages.py " + " ".join(
        [f"--n {n}", f"--size {args.size}", f"--epochs {args.epochs}", f"--queries {many}"]
    )
    repeated = (
        f"the sample catalog repeated to {n} records under fresh file names"
        if n > sample_size
        else f"{'the first ' + str(n) + ' records of ' if n < sample_size else ''}the sample catalog "
        "local_test_data/catalog.jsonl (300 Fashion-MNIST products at 112 px, 10 photos up to 512 px, "
        "2 broken)"
    )
    text = "\n".join(
        [
            "## stages",
            "",
            "Each stage script in its own process, in pipeline order (each reads the records the one "
            f"before wrote), over {repeated}; "
            f"{errors} records end with an `error` (the broken samples) and still count as images. "
            f"Thumbnails {args.size}x{args.size} RGB; the saliency stage with HED edges and with Canny "
            "(timed for views that need it; no default view does, so run-training.sh skips it and the "
            "whole ingestion leaves it out); train.py with the default views and objective for "
            f"{epochs} (a real training runs more: its time grows about linearly with the "
            "epochs), including encoding the catalog into features.h5. Seconds are wall time of the "
            "whole process (Python and TensorFlow start-up, model loading included); peak RSS is the "
            "process's own maximum (getrusage of a per-stage wrapper).",
            "",
            *lines,
            "",
            f"Query latency once predict.py is loaded: {marginal * 1000:,.0f} ms per query "
            f"(({all_['seconds']:.1f} s - {one['seconds']:.1f} s) / {many - 1}); the queries are catalog "
            "images given as paths, each through detection, thumbnail, views, encoders and the index. "
            "A fresh predict.py process pays start-up and loading once.",
            "",
            f"Machine: {machine()}. Date: {today()}. Load average at the start: {load} (other work shared "
            f"the cores). Whole run: {total:.0f} s.",
            "",
            f"Reproduce: `{command}`",
        ]
    )
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
