"""Autoencoder builder and objectives: shapes, every channel reconstructed, seeded corruptions."""

from __future__ import annotations

import numpy as np
import pytest

from simfusion.learn.autoencoder import (
    ENCODER_LAYER,
    Corruptor,
    build_autoencoder,
    encoder_of,
    latent_shape,
    nt_xent,
    reconstruction_of,
)
from simfusion.learn.options import OBJECTIVES


@pytest.mark.parametrize(("shape", "latent"), [((32, 32, 3), 8), ((28, 28, 1), 4), ((40, 24, 3), 16)])
def test_autoencoder_reconstructs_every_channel_at_any_size(shape, latent, rng):
    model = build_autoencoder(shape, latent=latent, objective="plain")
    images = rng.random((2, *shape)).astype(np.float32)
    assert tuple(reconstruction_of(model, images).shape) == (2, *shape)
    encoder = encoder_of(model)
    assert encoder.layers[-1].name == ENCODER_LAYER
    assert tuple(encoder(images).shape) == (2, *latent_shape(shape[0], shape[1], latent))


def test_contrastive_model_adds_a_projection_head(rng):
    model = build_autoencoder((32, 32, 3), latent=4, objective="contrastive", projection_dim=8)
    out = model(rng.random((2, 32, 32, 3)).astype(np.float32))
    assert tuple(out["reconstruction"].shape) == (2, 32, 32, 3) and tuple(out["projection"].shape) == (2, 8)
    with pytest.raises(ValueError, match="objective must be one of"):
        build_autoencoder((32, 32, 3), objective="magic")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_corruptions_stay_in_range_and_are_seeded(objective, rng):
    images = rng.random((4, 16, 16, 3)).astype(np.float32)
    inputs, targets = Corruptor(objective, seed=1)(images)
    again, _ = Corruptor(objective, seed=1)(images)
    np.testing.assert_array_equal(np.asarray(inputs), np.asarray(again))
    inputs = np.asarray(inputs)
    assert inputs.min() >= 0 and inputs.max() <= 1
    if objective == "contrastive":
        assert inputs.shape == (8, 16, 16, 3)  # two views of each image, stacked
        assert np.asarray(targets["reconstruction"]).shape == (8, 16, 16, 3)
    else:
        assert inputs.shape == images.shape
    if objective == "plain":
        np.testing.assert_array_equal(inputs, images)
    else:
        assert not np.allclose(inputs[:4], images)
    clean_inputs, _ = Corruptor(objective).clean(images)
    np.testing.assert_array_equal(np.asarray(clean_inputs)[:4], images)


def test_nt_xent_is_low_for_matching_pairs(rng):
    z = rng.standard_normal((4, 8)).astype(np.float32)
    matched = np.asarray(nt_xent(None, np.concatenate([z, z])))
    shuffled = np.asarray(nt_xent(None, np.concatenate([z, z[::-1]])))
    assert matched.shape == (8,)
    assert matched.mean() < shuffled.mean()
