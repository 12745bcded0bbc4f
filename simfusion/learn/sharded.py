"""train.py's encoding pass in shards, so Ray can map it over a large catalog (`--distributor ray`).

Each shard of the good records goes through every view's encoder on whichever worker takes it
(the encoders are built there, once per worker, from training.json's entries: never pickled),
and becomes a small feature store; `simfusion.io.shards` merges them into `features.h5`. A run
that dies redoes only the missing shards. The result equals the single-process pass, row for row.
Students need their teachers' features of the whole catalog at once, so they stay local.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.io.records import record_id
from simfusion.io.shards import SHARD_SIZE, build_store
from simfusion.io.stage import StageCore
from simfusion.io.store import FeatureStore, store_path
from simfusion.learn.data import FileImages, view_image_path
from simfusion.learn.encoders import Encoder, iter_encoded, make_encoder
from simfusion.views.registry import image_view, view_channels

log = logging.getLogger(__name__)


def view_attrs(spec: Mapping[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """A view's attributes in the store: what produced its features."""
    return {
        "model": spec["model"],
        "input_size": list(shape),
        "kind": spec["kind"],
        "objective": spec.get("objective", "none (pretrained)"),
        "source": spec["source"],
    }


def build_encoders(*, info: Mapping[str, Any], folder: str, views: Sequence[str]) -> dict[str, Encoder]:
    """Every view's encoder, built where the shard is encoded."""
    return {view: make_encoder(view, info["views"][view], info, folder) for view in views}


def encode_shard(
    records: Sequence[Mapping[str, Any]],
    *,
    views: Sequence[str],
    info: Mapping[str, Any],
    base: str | None,
    batch_size: int,
    encoders: Mapping[str, Encoder],
) -> dict[str, tuple[list[str], np.ndarray, dict[str, Any]]]:
    """One shard through each view's encoder: {view: (ids, features, attrs)}."""
    ids = [record_id(record) for record in records]
    height, width, channels = info["input_size"]
    out = {}
    for view in views:
        source = FileImages(
            [view_image_path(record, image_view(view), base) for record in records],
            height=height,
            width=width,
            channels=view_channels(view, channels),
        )
        maps = np.concatenate(
            [maps for _, maps in iter_encoded(encoders[view], source, batch_size=batch_size)]
        )
        out[view] = (ids, maps, view_attrs(info["views"][view], source.shape))
    return out


def encode_catalog_sharded(
    good: Sequence[Mapping[str, Any]],
    views: Sequence[str],
    *,
    info: dict[str, Any],
    base: str | None,
    model_save_path: str,
    encode_batch_size: int,
    distributor: str,
    ray_address: str | None = None,
    shard_size: int = SHARD_SIZE,
) -> None:
    """Encode every view of the good records into the store through shards; raises ValueError for
    student views, which need the whole catalog's teacher features in one process."""
    students = [view for view in views if info["views"][view]["kind"] == "student"]
    if students:
        raise ValueError(f"view(s) {', '.join(students)} train on the whole catalog: use --distributor local")
    core = StageCore(
        encode_shard,
        {"views": list(views), "info": info, "base": base, "batch_size": encode_batch_size},
        models={
            "encoders": (build_encoders, {"info": info, "folder": model_save_path, "views": list(views)})
        },
    )
    catalog = [{key: value for key, value in record.items() if key != "features"} for record in good]
    target = build_store(
        catalog,
        model_save_path,
        core,
        target=store_path(model_save_path),
        shard_size=shard_size,
        attrs={"input_size": info["input_size"], "run": info["run"]},
        distributor=distributor,
        ray_address=ray_address,
    )
    with FeatureStore(target) as store:
        for view in views:
            info["views"][view]["feature_shape"] = list(store.shape(view)[1:])
    log.info("encoded %d records of %s in shards (%s)", len(catalog), ", ".join(views), distributor)
