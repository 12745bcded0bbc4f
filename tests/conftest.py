"""Shared fixtures: small seeded images written to tmp_path."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DATA = os.path.join(REPO, "local_test_data")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def square_image(
    height: int = 60, width: int = 80, *, box=(20, 10, 50, 40), colour=(200, 30, 30), background=255
):
    """A flat background with one coloured rectangle at `box` [x0, y0, x1, y1]."""
    image = np.full((height, width, 3), background, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    return image
