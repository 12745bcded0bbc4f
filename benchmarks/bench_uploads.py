#!/usr/bin/env python3
"""Benchmark: what a large photo upload costs the HTTP service, decoded whole or at a reduced scale.

A phone photo of a product is 12-48 megapixels. serve.py decodes a JPEG query with Pillow's
draft mode (`decode_image(..., reduce_to=QUERY_SIDE)`: 1/2, 1/4 or 1/8 scale inside the JPEG
decoder, each side still at least QUERY_SIDE px) and refuses uploads over MAX_UPLOAD_PIXELS. The
photos are scikit-image's astronaut and coffee photos, scaled up to each size (cubic) with
seeded sensor-like noise, saved as JPEG quality 90. Each decode runs in a fresh process; its peak
memory is the growth of the resident set's high-water mark (VmHWM, reset through
/proc/self/clear_refs after the models are loaded and warm) over the resident set before it.
With --model_save_path (default out/model, which `make demo` trains), each photo is also searched through
`Catalog.search_images` decoded both ways: the time of the whole query and how many of the top 10
results the two decodes share. Writes section `uploads` of BENCHMARKS.md.

    python benchmarks/bench_uploads.py [--sizes 12,24,48] [--model_save_path out/model]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import ROOT, load_average, machine, publish, today  # noqa: E402

log = logging.getLogger("bench_uploads")
SECTION = "uploads"
SHAPES = {12: (3000, 4000), 24: (4000, 6000), 48: (6000, 8000)}  # megapixels: (height, width)

# Runs in a fresh process: decode one file (whole, or reduced), optionally search with it; prints JSON.
PROBE = """
import json, sys, time
from simfusion.io.images import MAX_PIXELS, decode_image
from simfusion.serve.service import QUERY_SIDE
path, mode, model = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
catalog = None
if model:
    from simfusion.search.catalog import Catalog
    catalog = Catalog.open(model)
    catalog.search_images([decode_image(open(sys.argv[4], "rb").read())], [{"id": "warm"}], k=10)
def status(key):  # kB
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
with open("/proc/self/clear_refs", "w") as refs:  # resets the peak (VmHWM) to the current RSS
    refs.write("5")
before = status("VmRSS:")
start = time.perf_counter()
image = decode_image(data, max_pixels=MAX_PIXELS, reduce_to=QUERY_SIDE if mode == "reduced" else None)
decoded = time.perf_counter() - start
out = {"decode_s": decoded, "shape": list(image.shape)}
if catalog is not None:
    start = time.perf_counter()
    [answer] = catalog.search_images([image], [{"id": "query"}], k=10)
    out["query_s"] = decoded + time.perf_counter() - start
    out["top"] = [hit["id"] for hit in answer["results"]]
out["peak_mib"] = (status("VmHWM:") - before) / 1024
print(json.dumps(out))
"""


def make_photos(folder: str, sizes: list[int], seed: int = 0) -> list[tuple[str, int, str]]:
    """(name, megapixels, path) of each source photo scaled up to each size, as JPEG quality 90."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for name, photo in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        for size in sizes:
            height, width = SHAPES[size]
            big = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
            big += rng.normal(0, 4, big.shape).astype(np.int16)
            path = os.path.join(folder, f"{name}-{size}mp.jpg")
            ok, encoded = cv2.imencode(
                ".jpg",
                cv2.cvtColor(np.clip(big, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90],
            )
            assert ok
            with open(path, "wb") as stream:
                stream.write(encoded.tobytes())
            out.append((name, size, path))
    return out


def probe(path: str, mode: str, model: str, warm: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, path, mode, model, warm],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: list[int], model: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as folder:
        photos = make_photos(folder, sizes)
        warm = os.path.join(ROOT, "local_test_data", "query.jpg")
        for name, size, path in photos:
            row = {"photo": name, "mp": size, "mib": os.path.getsize(path) / 2**20}
            for mode in ("whole", "reduced"):
                row[mode] = probe(path, mode, model, warm)
                shown = {key: value for key, value in row[mode].items() if key != "top"}
                log.info("%s %d MP %s: %s", name, size, mode, shown)
            if model:
                row["shared"] = len(set(row["whole"]["top"]) & set(row["reduced"]["top"]))
            rows.append(row)
    return rows


def report(rows: list[dict], model: str, elapsed: float) -> str:
    from simfusion.serve.service import MAX_UPLOAD_PIXELS, QUERY_SIDE

    demo = " (as make demo trains out/model: the sample catalog, the default views)"
    catalog = model + demo if model else "none (decode only)"

    lines = [
        "## uploads",
        "",
        f"A large JPEG query decoded whole against serve.py's reduced decode (Pillow draft mode, each "
        f"side still at least {QUERY_SIDE} px; uploads over {MAX_UPLOAD_PIXELS // 10**6} MP are "
        "refused). Photos: scikit-image's astronaut and coffee scaled up to each size with seeded "
        "noise, JPEG quality 90. Peak memory is the growth of the process's resident high-water mark "
        "(VmHWM, reset after the models are loaded and warm) over its resident set before the decode, "
        "the search included where there is one; each cell is one run in a "
        f"fresh process. Catalog: {catalog}. Machine: {machine()} (load "
        f"average {load_average()} at the end). Date: {today()}. Whole run: {elapsed:.0f} s.",
        "",
        "| photo | MP | file MiB | decoded (whole) | decoded (reduced) | decode s whole | reduced "
        "| peak MiB whole | reduced | query s whole | reduced | top-10 shared |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        whole, reduced = row["whole"], row["reduced"]
        shape = "x".join(str(v) for v in whole["shape"][:2][::-1])
        small = "x".join(str(v) for v in reduced["shape"][:2][::-1])
        query = (
            f"{whole['query_s']:.2f} | {reduced['query_s']:.2f} | {row['shared']}/10"
            if "query_s" in whole
            else "- | - | -"
        )
        lines.append(
            f"| {row['photo']} | {row['mp']} | {row['mib']:.1f} | {shape} | {small} | "
            f"{whole['decode_s']:.2f} | {reduced['decode_s']:.2f} | {whole['peak_mib']:.0f} | "
            f"{reduced['peak_mib']:.0f} | {query} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="12,24,48", help=f"megapixels, of {sorted(SHAPES)}")
    parser.add_argument(
        "--model_save_path",
        default=os.path.join(ROOT, "out", "model"),
        help="a trained catalog to search (none: '')",
    )
    parser.add_argument("--no_write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    if not set(sizes) <= set(SHAPES):
        parser.error(f"--sizes: each of {sorted(SHAPES)}")
    model = args.model_save_path
    if model and not os.path.exists(os.path.join(model, "index", "index.json")):
        log.warning("no trained catalog at %s (make demo trains one): decode only", model)
        model = ""
    start = time.perf_counter()
    rows = run(sizes, model)
    text = report(rows, model and os.path.abspath(model), time.perf_counter() - start)
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
