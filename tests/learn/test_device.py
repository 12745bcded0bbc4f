"""Training profiles: what train.py's defaults train on a CPU and where TensorFlow sees a GPU."""

from __future__ import annotations

import logging

import pytest

from simfusion.learn.device import GPU_EPOCHS, GPU_TIME_BUDGET, GPU_VIEWS, gpu_names, plan_training
from simfusion.learn.options import TrainOptions
from simfusion.learn.students import STUDENT_EPOCHS
from simfusion.learn.training import student_epochs

DEFAULTS = ("hed_vgg16", "hog", "tiny")
GPU = ["/physical_device:GPU:0"]


def plan(profile="auto", gpus=(), **given):
    return plan_training(profile, gpus=list(gpus), default_views=DEFAULTS, cpu_epochs=20, **given)


def test_on_a_cpu_the_defaults_train_nothing_more():
    cpu = plan()
    assert (cpu.profile, cpu.views, cpu.epochs, cpu.time_budget) == ("cpu", DEFAULTS, 20, None)
    assert plan("cpu", GPU) == cpu  # asked for, it wins over the GPU


def test_where_a_gpu_is_seen_the_trained_views_train_by_time_budget():
    gpu = plan(gpus=GPU)
    assert gpu.profile == "gpu"
    assert gpu.views == (*DEFAULTS, *GPU_VIEWS)
    assert (gpu.epochs, gpu.time_budget) == (GPU_EPOCHS, GPU_TIME_BUDGET)
    assert plan(gpus=GPU, views=("student", *DEFAULTS)).views == ("student", *DEFAULTS)  # not doubled


def test_flags_given_win_over_the_profile():
    given = plan(gpus=GPU, views=("hog",), epochs=3, time_budget=30.0)
    assert (given.views, given.epochs, given.time_budget) == (("hog",), 3, 30.0)
    assert plan(views=("hog",), epochs=2).epochs == 2


def test_the_gpu_profile_without_a_gpu_warns_and_still_plans_it(caplog):
    with caplog.at_level(logging.WARNING):
        forced = plan("gpu")
    assert forced.profile == "gpu" and forced.time_budget == GPU_TIME_BUDGET
    assert "sees no GPU" in caplog.text
    with pytest.raises(ValueError, match="profile"):
        plan("tpu")


def test_a_student_trains_by_the_budget_only_when_there_is_one():
    assert student_epochs({}, TrainOptions(epochs=100)) == STUDENT_EPOCHS
    assert student_epochs({"epochs": 3}, TrainOptions(epochs=100)) == 3
    assert student_epochs({"epochs": 3}, TrainOptions(epochs=100, time_budget=60)) == 100


def test_this_machine_is_seen_as_it_is():
    names = gpu_names()
    assert isinstance(names, list) and all("GPU" in name for name in names)
