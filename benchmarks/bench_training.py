"""Training benchmark: autoencoder training and encoding speed, and the memory of streaming a store.

Synthetic seeded thumbnails (a coloured rectangle and a blob on a gradient). Measures, at 64 and
128 px RGB: training images/s per objective (`plain` and the default `contrastive`, which runs
two augmented views per image; the first epoch, with tracing, is not counted) and encoding
images/s (encoder only, batches of 64). Then encodes a stream of N synthetic 128 px thumbnails
into a feature store with StoreWriter, each N in a fresh process, and reports its peak memory
(ru_maxrss) and the peak of Python/numpy allocations (tracemalloc): flat in N means streaming.
Writes section `training` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._report import load_average, machine, publish, today  # noqa: E402

SECTION = "training"


class SyntheticImages:
    """An ImageSource of n seeded synthetic thumbnails, made on demand (nothing held in memory)."""

    def __init__(self, n: int, size: int, *, seed: int = 0) -> None:
        self.n, self.seed = n, seed
        self.shape = (size, size, 3)

    def __len__(self) -> int:
        return self.n

    def load(self, indices) -> np.ndarray:
        size = self.shape[0]
        out = np.empty((len(indices), size, size, 3), np.uint8)
        ramp = np.linspace(0, 1, size, dtype=np.float32)
        yy, xx = np.mgrid[0:size, 0:size]
        for k, index in enumerate(indices):
            rng = np.random.default_rng((self.seed, int(index)))
            low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            image = np.repeat(low + (high - low) * ramp[None, :, None], size, axis=0)
            x0, y0 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
            cx, cy, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 10, size // 4))]
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
            out[k] = image.astype(np.uint8)
        return out


def bench_training(size: int, n: int, *, objective: str, epochs: int = 3) -> float:
    """Training images/s: training images over the fastest epoch after the first."""
    import keras

    from simfusion.learn.data import ArrayImages
    from simfusion.learn.options import TrainOptions
    from simfusion.learn.trainer import train_view

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    images = ArrayImages(SyntheticImages(n, size).load(range(n)))
    options = TrainOptions(
        epochs=epochs, batch_size=32, objective=objective, validation_split=0.0, patience=epochs
    )
    train_view(images, options=options, callbacks=[Timer()])
    return n / min(times[1:])


def bench_encoding(size: int, n: int) -> float:
    """Encoding images/s of an (untrained: same cost) autoencoder's encoder, batches of 64."""
    from simfusion.learn.autoencoder import build_autoencoder
    from simfusion.learn.encoders import AutoencoderEncoder

    encoder = AutoencoderEncoder(build_autoencoder((size, size, 3), objective="plain"))
    batch = SyntheticImages(64, size).load(range(64))
    encoder(batch)  # tracing
    start = time.perf_counter()
    for _ in range(max(1, n // 64)):
        encoder(batch)
    return max(1, n // 64) * 64 / (time.perf_counter() - start)


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc), unlike ru_maxrss which keeps the start-up peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def store_child(n: int, size: int, folder: str) -> dict:
    """Encode n synthetic thumbnails into a store, streaming; runs in its own process."""
    import tracemalloc

    from simfusion.io.store import FeatureStore, StoreWriter
    from simfusion.learn.autoencoder import build_autoencoder
    from simfusion.learn.encoders import AutoencoderEncoder, iter_encoded

    encoder = AutoencoderEncoder(build_autoencoder((size, size, 3), objective="plain"))
    encoder(np.zeros((1, size, size, 3), np.uint8))
    tracemalloc.start()
    source = SyntheticImages(n, size)
    records = [
        {"id": f"item{i:07d}", "image": f"items/{i:07d}.png", "category": "synthetic"} for i in range(n)
    ]
    ids = [r["id"] for r in records]
    path = os.path.join(folder, f"features-{n}.h5")
    start_rss = current_rss_mb()
    rss = [start_rss]
    start = time.perf_counter()
    with StoreWriter(path, attrs={"input_size": [size, size, 3]}, catalog_records=records) as out:
        for first, maps in iter_encoded(encoder, source, batch_size=64):
            if first == 0:
                out.add_view("thumbnail", {"model": "untrained", "kind": "autoencoder"}, maps.shape[1:])
            out.append("thumbnail", ids[first : first + len(maps)], maps)
            rss.append(current_rss_mb())
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with FeatureStore(path) as store:
        assert store.shape("thumbnail")[0] == n
    result = {
        "n": n,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "rss_start_mb": start_rss,
        "rss_peak_mb": max(rss),
        "rss_end_mb": rss[-1],
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": traced_peak / 2**20,
        "store_mb": os.path.getsize(path) / 2**20,
    }
    os.unlink(path)
    return result


def bench_store(n: int, size: int, folder: str) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--store_child",
        str(n),
        "--size",
        str(size),
        "--dir",
        folder,
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_n", type=int, default=256, help="training images per run")
    parser.add_argument("--encode_n", type=int, default=1024, help="images for the encoding speed")
    parser.add_argument("--store_n", default="4000,16000", help="stream sizes for the memory check")
    parser.add_argument("--size", type=int, default=128, help="thumbnail side of the store stream")
    parser.add_argument("--dir", default=None, help="folder for the temporary stores")
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--store_child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.store_child:
        print(json.dumps(store_child(args.store_child, args.size, args.dir)))
        return 0

    import tempfile

    load = load_average()
    rows = []
    for size in (64, 128):
        n = args.train_n if size == 64 else args.train_n // 2
        for objective in ("plain", "contrastive"):
            speed = bench_training(size, n, objective=objective)
            rows.append(
                (f"train {size} px RGB, {objective}", speed, f"{n} images, batch 32, best epoch of 2-3")
            )
            print(rows[-1], file=sys.stderr, flush=True)
        speed = bench_encoding(size, args.encode_n)
        rows.append((f"encode {size} px RGB", speed, f"{args.encode_n} images, batches of 64, encoder only"))
        print(rows[-1], file=sys.stderr, flush=True)
    stores = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for n in (int(v) for v in args.store_n.split(",")):
            stores.append(bench_store(n, args.size, folder))
            print(stores[-1], file=sys.stderr, flush=True)

    intro = (
        "Synthetic seeded thumbnails (gradient + rectangle + disc), the default autoencoder",
        f"(filters 32/64/128, latent 16). Machine: {machine()} (TensorFlow on CPU). Date: {today()}.",
        f"Load average at the start: {load} (other jobs share the cores; speeds vary with it).",
    )
    stream = (
        f"Streaming a catalog of {args.size} px thumbnails into `features.h5` (`iter_encoded` +",
        "`StoreWriter`, batches of 64, untrained encoder: same cost), each size in a fresh process:",
    )
    lines = [
        "## training",
        "",
        " ".join(intro),
        "",
        "| what | images/s | notes |",
        "|---|---:|---|",
        *[f"| {what} | {speed:,.0f} | {notes} |" for what, speed, notes in rows],
        "",
        " ".join(stream),
        "",
        "| images | seconds | images/s | RSS MB start | RSS MB peak | RSS MB end | traced MB | store MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {s['n']:,} | {s['seconds']:.0f} | {s['images_per_s']:,.0f} | {s['rss_start_mb']:,.0f} "
            f"| {s['rss_peak_mb']:,.0f} | {s['rss_end_mb']:,.0f} | {s['traced_peak_mb']:.1f} "
            f"| {s['store_mb']:.0f} |"
            for s in stores
        ],
        "",
        "RSS is sampled after every batch (/proc VmRSS); traced = peak of Python and numpy allocations",
        "(tracemalloc) during the stream, including the catalog records.",
        "",
    ]
    if len(stores) > 1:
        first, last = stores[0], stores[-1]
        growth = (last["rss_peak_mb"] - last["rss_start_mb"]) - (first["rss_peak_mb"] - first["rss_start_mb"])
        minutes = 100_000 / last["images_per_s"] / 60
        note = (
            f"The RSS rise during the stream differs by {growth:+.0f} MB between {first['n']:,} and",
            f"{last['n']:,} images (the catalog",
            "records and ids, held as Python lists, are the only part that grows with N; feature maps go",
            "to disk batch by batch).",
        )
        if last["n"] < 100_000:
            note += (
                f"100k images were not run: at the rate above they would take about {minutes:.0f} minutes.",
            )
        lines += [" ".join(note), ""]
    lines.append(f"Reproduce: `python benchmarks/bench_training.py --store_n {args.store_n}`")
    text = "\n".join(lines)
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
