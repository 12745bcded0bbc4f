"""A real uvicorn server on a free port, in a thread of the test process, and a model folder to serve."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time

import requests
from conftest import SAMPLE_DATA, synthetic_store

from simfusion.io.store import store_path
from simfusion.search.build import build_catalog_index, index_path
from simfusion.search.index_files import save_index


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(app, *, timeout: float = 120.0):
    """Serve `app` with uvicorn on 127.0.0.1 and a free port; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        assert requests.get(url + "/health", timeout=10).status_code == 200
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def synthetic_model(folder, **store_options):
    """A synthetic store, its index, and a training.json naming its views (no trained encoders)."""
    ids, records, views = synthetic_store(folder, **store_options)
    save_index(build_catalog_index(store_path(folder)), index_path(folder))
    info = {
        "input_size": [32, 32, 3],
        "views": {view: {"kind": "autoencoder", "source": view} for view in views},
    }
    with open(os.path.join(folder, "training.json"), "w") as out:
        json.dump(info, out)
    return ids, records, views


SAMPLE_CLASSES = ("sneaker", "trouser", "bag", "dress", "sandal")


def sample_records(per_class: int = 4) -> list[dict]:
    """`per_class + 1` Fashion-MNIST sample records of each of SAMPLE_CLASSES (local_test_data)."""
    records = []
    with open(os.path.join(SAMPLE_DATA, "catalog.jsonl")) as stream:
        for record in map(json.loads, stream):
            if record.get("category") in SAMPLE_CLASSES and "fashion" in record.get("image", ""):
                if sum(r["category"] == record["category"] for r in records) < per_class + 1:
                    records.append(record)
    return records


def train_tiny_model(out) -> dict:
    """OUT/model trained 1 epoch at 32x32 on 20 sample images (thumbnail and foreground views),
    with OUT/views/thumbnail beside it as the pipeline lays it out; one image per class held out."""
    from simfusion.cli.index import main as fusion_main
    from simfusion.cli.train import main as train_main
    from simfusion.views.saliency import saliency_records
    from simfusion.views.thumbnail import thumbnail_record

    records = sample_records()
    held_out = [next(r for r in reversed(records) if r["category"] == c) for c in SAMPLE_CLASSES]
    catalog = [r for r in records if r not in held_out]
    views = os.path.join(out, "views")
    for record in catalog:
        thumbnail_record(
            record, base_path=SAMPLE_DATA, output_path=os.path.join(views, "thumbnail"), height=32, width=32
        )
    catalog = saliency_records(
        catalog, base_path=os.path.join(views, "thumbnail"), output_path=views, views=("foreground",)
    )
    model = os.path.join(out, "model")
    argv = ["--model_save_path", model, "--base_image_path_for_model", views, "--im_height", "32"]
    argv += ["--im_width", "32", "--views", "thumbnail,foreground", "--epochs", "1", "--batch_size", "8"]
    stdin = io.StringIO("\n".join(json.dumps(r) for r in catalog))
    assert train_main([*argv, "--no_progress"], stdin=stdin, stdout=io.StringIO()) == 0
    assert fusion_main(["--model_save_path", model, "--whiten"]) == 0
    return {"model": model, "catalog": catalog, "held_out": held_out}
