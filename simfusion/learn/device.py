"""Where training runs, and what train.py's defaults train there (`--profile`).

On 2 CPU cores a network trained on the catalog learns less in minutes than the pretrained views
already give (BENCHMARKS.md, fusion_heldout: a student distilled from the fusion added nothing),
so the CPU defaults train nothing: every default view is pretrained or computed. Where TensorFlow
sees a GPU the same minutes go much further, so the defaults add the pseudo-label student (a CNN
trained on k-means clusters of the pretrained views, simfusion.learn.students) and train it by a
time budget rather than by a few epochs. The index's tuning (simfusion.search.tune) weighs it like
any other view, and gives it weight 0 when it adds nothing. Flags the user gives (`--views`,
`--epochs`, `--time_budget`) win.

The contrastive thumbnail autoencoder is not added: it is trained to see through the very
augmentations the tuning's copies are made with, so the tuning overrates it. On the held-out
catalog (the GPU profile forced on 2 CPU cores, 240 s a view) it had the best copies' MRR of every
view (0.741) and the worst neighbourhood consensus (0.353), took weight 0.5, and the index's P@10
fell from 0.7827 to 0.7765 (BENCHMARKS.md, fusion_heldout). It stays selectable with `--views`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

PROFILES = ("auto", "cpu", "gpu")
# what the GPU profile adds to the default views: trained on the catalog, no labels
GPU_VIEWS = ("student",)
GPU_EPOCHS = 100  # an upper bound: the time budget (or an autoencoder's early stopping) ends it first
GPU_TIME_BUDGET = 600.0  # seconds of training per trained view


@dataclass(frozen=True)
class TrainingPlan:
    """What one train.py run trains: its profile, views, epochs and time budget per trained view."""

    profile: str
    views: tuple[str, ...]
    epochs: int
    time_budget: float | None


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees (empty on a CPU-only machine)."""
    import tensorflow as tf

    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def plan_training(
    profile: str,
    *,
    gpus: Sequence[str],
    default_views: Sequence[str],
    cpu_epochs: int,
    views: Sequence[str] | None = None,
    epochs: int | None = None,
    time_budget: float | None = None,
    students: bool = True,
) -> TrainingPlan:
    """The run's plan: `profile` "auto" is "gpu" where `gpus` is not empty, else "cpu".

    cpu: `views` or `default_views`, `epochs` or `cpu_epochs`, no time budget unless given.
    gpu: `views` or `default_views` plus GPU_VIEWS, `epochs` or GPU_EPOCHS, `time_budget` or
    GPU_TIME_BUDGET. A value given always wins over the profile's. `students` False (a distributed
    encoding pass, which cannot train one) leaves the student out of the gpu profile's defaults."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    chosen = ("gpu" if gpus else "cpu") if profile == "auto" else profile
    if chosen == "gpu" and not gpus:
        log.warning("train: the gpu profile was asked for, but TensorFlow sees no GPU: it trains on the CPU")
    if chosen == "cpu":
        return TrainingPlan("cpu", tuple(views or default_views), epochs or cpu_epochs, time_budget)
    from simfusion.views.registry import STUDENT, view_spec

    added = tuple(v for v in GPU_VIEWS if students or view_spec(v).kind != STUDENT)
    if not students and not views:
        log.info(
            "train: the gpu profile's student is left out: it trains on the whole catalog in one process"
        )
    planned = tuple(views) if views else tuple(dict.fromkeys((*default_views, *added)))
    return TrainingPlan("gpu", planned, epochs or GPU_EPOCHS, time_budget or GPU_TIME_BUDGET)
