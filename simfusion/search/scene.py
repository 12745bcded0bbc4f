"""The index's scene profile: the views and weights that a query photographed in a busy scene is
answered with.

Some views serve clean shots well and busy scenes badly. The MoveNet pose views (a pose network
trained on people in scenes; `scene_safe` False in simfusion.views.registry) raise every clean and
near-duplicate benchmark, but they answer to the scene around the product and pull a scene query's
catalog-guided crops off it. An index that holds such a view therefore also keeps a scene profile:
the scene-safe views among its own, with weights tuned on them alone (simfusion.search.tune), and a
clusters projection of their own (simfusion.search.clusters, params under `PREFIX`) whose catalog
vectors ride in one more block of the fused part. A catalog-guided query (the detector was unsure
of it: a busy scene, simfusion.search.crops) chooses its crop and is ranked with the profile; every
other query with the index's own views and weights. It stays one index and one scan: a query fills
the clusters block of its profile and leaves zeros in the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.search.vectors import normalize_weights
from simfusion.views.registry import scene_safe

CLEAN, SCENE = "clean", "scene"
PROFILES = (CLEAN, SCENE)
PREFIX = "scene/"  # the scene profile's clusters params keys: "scene/clusters/..."


def scene_profile(
    weights: Mapping[str, float], tuned: Mapping[str, float] | None = None
) -> dict[str, Any] | None:
    """The scene profile of an index of these views and `weights`: {"views", "weights"}, or None when
    every view is scene-safe (the index's own weights serve scenes too) or none is. `tuned`: the
    scene-safe views' weights from the tuning (0 leaves a view out), else the index's own."""
    safe = [view for view in weights if scene_safe(view)]
    if not safe or len(safe) == len(weights):
        return None
    chosen = {view: float((weights if tuned is None else tuned).get(view, 0.0)) for view in safe}
    chosen = {view: w for view, w in chosen.items() if w > 0} or {view: float(weights[view]) for view in safe}
    return {"views": list(chosen), "weights": chosen}


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")


def profile_weights(meta: Mapping[str, Any], profile: str) -> dict[str, float]:
    """The weights (view -> weight) that a query of `profile` searches with by default: the scene
    profile's for a scene query where the index has one, else the index's own."""
    check_profile(profile)
    if profile == SCENE and meta.get("scene"):
        return dict(meta["scene"]["weights"])
    return dict(meta["weights"])


def profile_fused(vectors_by_view: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The fused vectors (N, D) of a profile's views at its weights, in its order: what its clusters
    projection is fitted on and applied to."""
    share = normalize_weights(weights)
    return np.concatenate(
        [np.sqrt(share[view]) * np.asarray(vectors_by_view[view], np.float32) for view in share], axis=1
    )


def profile_views(meta: Mapping[str, Any], profile: str, views: Sequence[str] | None = None) -> list[str]:
    """The views a query of `profile` searches: `views` where given, else its profile's."""
    return list(views or profile_weights(meta, profile))
