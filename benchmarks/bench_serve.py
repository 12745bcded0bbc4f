#!/usr/bin/env python3
"""Benchmark: the HTTP service's latency and throughput, and where a query's time goes.

Trains a small model with the default views and detector (run-training.sh, 1 epoch, 128 px) on
the first N sample records, or uses --model. Serves it with serve.py in its own process and
uploads sample images from 1, 4 and 16 concurrent clients (p50 / p95 latency per request,
requests per second). The 10,000-item catalog is that model's store grown to 10,000 rows: the
encoded items' feature maps repeated with seeded noise, records repeated with new ids (a query's
cost depends on the catalog's size and dimensions, not on which products it holds; encoding
10,000 Fashion-MNIST images through HED would take about 15 minutes on 2 cores). Then, in this
process, one query's stages are timed apart: detection, thumbnail + views (with HED edges, and
with Canny to isolate HED), encoders, index search + records, JSON. Writes section `serve`.

    python benchmarks/bench_serve.py [--records 60] [--requests 24] [--model out/model]
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import ROOT, load_average, machine, today, write_section  # noqa: E402

log = logging.getLogger("bench_serve")
SECTION = "serve"
GOAL_MS = 100  # issue 13: a warm query at p50 <= 100 ms at 10,000 items with the default views
SAMPLE = os.path.join(ROOT, "local_test_data")
CLIENTS = (1, 4, 16)


def train(out: str, n: int) -> str:
    """OUT/model from the first `n` sample records with run-training.sh's defaults, 1 epoch."""
    with open(os.path.join(SAMPLE, "catalog.jsonl")) as stream:
        records = [json.loads(line) for line in stream if line.strip() and "broken" not in line][:n]
    os.makedirs(out, exist_ok=True)
    catalog = os.path.join(out, "catalog.jsonl")
    with open(catalog, "w") as stream:  # absolute paths: run-training.sh reads them beside the records
        stream.writelines(
            json.dumps({**r, "image": os.path.join(SAMPLE, r["image"])}) + "\n" for r in records
        )
    env = {**os.environ, "PYTHON": sys.executable, "EPOCHS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(os.path.join(out, "training.log"), "w") as logs:
        subprocess.run(
            [os.path.join(ROOT, "run-training.sh"), catalog, out],
            env=env,
            stdout=logs,
            stderr=logs,
            check=True,
        )
    return os.path.join(out, "model")


def grow(model: str, out: str, size: int, seed: int = 0) -> str:
    """A copy of `model` whose store holds `size` rows (its rows repeated with 5% seeded noise)."""
    from simfusion.io.store import FeatureStore, store_path, write_store
    from simfusion.search.build import build_catalog_index, index_path
    from simfusion.search.index_files import save_index

    target = os.path.join(out, "model")
    shutil.copytree(model, target)
    rng = np.random.default_rng(seed)
    with FeatureStore(store_path(model)) as store:
        records = store.records()
        views = {}
        for view in store.views:
            maps = store.features(view)
            rows = np.arange(size) % len(maps)
            noise = rng.standard_normal((size, *maps.shape[1:])).astype(np.float32)
            grown = maps[rows] + 0.05 * maps.std() * noise
            views[view] = (rows, grown, store.attrs(view))
        root = store.attrs()
    ids = [f"{records[r % len(records)]['id']}~{r}" for r in range(size)]
    grown_records = [{**records[r % len(records)], "id": ids[r]} for r in range(size)]
    views = {view: (ids, maps, attrs) for view, (_, maps, attrs) in views.items()}
    os.remove(store_path(target))
    write_store(store_path(target), catalog_records=grown_records, views=views, attrs=root, compression=None)
    save_index(build_catalog_index(store_path(target)), index_path(target))
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    command = [
        sys.executable,
        os.path.join(ROOT, "serve.py"),
        "--model_save_path",
        model,
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        [*command, "--log_level", "WARNING", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).json().get("image_search"):
                return process, url
        except (requests.RequestException, ValueError):
            time.sleep(0.5)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("serve.py did not start")


def load(url: str, images: list[bytes], clients: int, requests_total: int) -> dict:
    """`requests_total` uploads from `clients` threads; latency per request and throughput."""
    import requests

    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    counter = iter(range(requests_total))

    def client() -> None:
        with requests.Session() as session:
            for number in counter:
                start = time.perf_counter()
                answer = session.post(
                    url + "/search?top_k=10",
                    files={"image": ("q.jpg", images[number % len(images)])},
                    timeout=300,
                )
                took = time.perf_counter() - start
                with lock:
                    (latencies if answer.status_code == 200 else errors).append(took)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "rps": len(latencies) / wall,
    }


def stages(model: str, images: list[np.ndarray], repeat: int) -> dict[str, float]:
    """Median ms of each stage of one query, in this process, models warm."""
    from dataclasses import replace

    from simfusion.io.records import record_json
    from simfusion.learn.encoders import encode_views
    from simfusion.pipeline import detect_boxes, view_images
    from simfusion.search.catalog import Catalog
    from simfusion.search.faiss_index import single_query_threads

    single_query_threads()  # as serve.py does
    catalog = Catalog.open(model)
    pipeline, views = catalog.pipeline, catalog.views
    canny = replace(pipeline, edges="canny")
    times: dict[str, list[float]] = {}

    def clock(name, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        times.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        return value

    for number in range(repeat + 1):
        image = images[number % len(images)]
        found = clock("detection", detect_boxes, [image], detector=pipeline.detector)
        box = [found[0].get("box")]
        batches, _ = clock("thumbnail + views (HED edges)", view_images, [image], views, pipeline, boxes=box)
        clock("thumbnail + views (Canny edges)", view_images, [image], views, canny, boxes=box)
        maps = clock("encoders", encode_views, batches, model_save_path=model)
        records = [{"upload": "q.jpg"}]
        clock("search + hit records", catalog.answer, records, maps, k=10)
        clock("JSON", record_json, records[0])
        if number == 0:
            times.clear()  # the first pass loads the models
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60, help="sample records to train on")
    parser.add_argument("--model", help="a trained model folder to use instead of training one")
    parser.add_argument("--size", type=int, default=10_000, help="items of the grown catalog")
    parser.add_argument(
        "--large",
        help="a trained model of a real large catalog to serve instead of the grown one (e.g. the 10,000 "
        "Fashion-MNIST test items: make_heldout_catalog.py --split test --n 10000, then run-training.sh)",
    )
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--repeat", type=int, default=10, help="queries for the stage breakdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    from simfusion.io.images import load_image

    began, load_start = time.time(), load_average()
    work = tempfile.mkdtemp(prefix="bench_serve-")
    try:
        model = args.model or train(os.path.join(work, "small"), args.records)
        big = args.large or grow(model, os.path.join(work, "big"), args.size)
        if args.large:
            from simfusion.search.catalog import Catalog

            args.size = len(Catalog.open(big))
        paths = sorted(glob.glob(os.path.join(SAMPLE, "fashion", "*", "*.jpg")))[::25][:6]
        paths += sorted(glob.glob(os.path.join(SAMPLE, "photos", "*.jpg")))[:2]
        uploads = [open(path, "rb").read() for path in paths]
        rows = []
        for name, folder, extra in (
            ("sample", model, []),
            (f"{args.size:,}", big, []),
            (
                f"{args.size:,}, fast: --detector none --edges canny",
                big,
                ["--detector", "none", "--edges", "canny"],
            ),
        ):
            process, url = serve(folder, extra)
            try:
                load(url, uploads, 1, 4)  # warm the connection and any lazy state
                levels = CLIENTS if not extra else (1, 4)
                for clients in levels:
                    row = load(url, uploads, clients, args.requests)
                    log.info("%s: %s", name, row)
                    rows.append((name, row))
            finally:
                process.terminate()
                process.wait(timeout=60)
        breakdown = stages(big, [load_image(path) for path in paths], args.repeat)
        log.info("stages: %s", breakdown)
        from simfusion.search.catalog import Catalog

        catalog = Catalog.open(model)
        report(rows, breakdown, catalog.views, len(catalog), args, load_start, time.time() - began)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rows, breakdown, views, sample_items, args, load_start, seconds) -> None:
    if args.large:
        large = (
            f"The {args.size:,}-item catalog is a real one, `{args.large}`, trained by run-training.sh with "
            "the same defaults (for the Fashion-MNIST test split: `make_heldout_catalog.py --split test "
            "--n 10000`)."
        )
    else:
        large = (
            f"The {args.size:,}-item catalog is that store grown with seeded noise (see the script: the "
            "query's cost depends on the catalog's size, not on its products)."
        )
    lines = [
        "## serve",
        "",
        f"`serve.py` (FastAPI + uvicorn, 4 worker threads) in its own process; clients upload sample images "
        f"(6 Fashion-MNIST products, 2 photos) to `POST /search?top_k=10` from 1, 4 and 16 threads, "
        f"{args.requests} requests per row after 4 warm-up requests; latency is per request, seen by the "
        f"client. Model: run-training.sh's defaults (detector objectness, 128 px thumbnails) "
        f"on {sample_items} sample records; views {', '.join(views)}. {large} Machine: "
        f"{machine()} (load average {load_start} at the start; shared cores make latencies noisy). "
        f"Date: {today()}. Whole run: {seconds:.0f} s.",
        "",
        "| catalog | clients | requests | p50 ms | p95 ms | requests/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows:
        lines.append(
            f"| {name} | {row['clients']} | {row['requests']} | {row['p50']:.0f} | {row['p95']:.0f} "
            f"| {row['rps']:.2f} |"
        )
    lines += [
        "",
        f"Where one query's time goes ({args.size:,} items, in-process, models warm, "
        f"median of {args.repeat}):",
        "",
    ]
    lines += ["| stage | ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in breakdown.items()]
    p50 = next((row["p50"] for name, row in rows if name == f"{args.size:,}" and row["clients"] == 1), None)
    if p50 is not None:
        verdict = "met" if p50 <= GOAL_MS else "**not met**"
        lines += [
            "",
            f"Goal: a warm query at p50 <= {GOAL_MS} ms at {args.size:,} items with the defaults: "
            f"{verdict} ({p50:.0f} ms with 1 client).",
        ]
    lines += [
        "",
        f"Reproduce: `python benchmarks/bench_serve.py --records {args.records} --requests {args.requests}"
        + (" --large MODEL" if args.large else "")
        + "`",
    ]
    write_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
