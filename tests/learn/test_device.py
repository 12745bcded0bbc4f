"""Training profiles: what train.py's defaults train on a CPU and where TensorFlow sees a GPU."""

from __future__ import annotations

import logging

import pytest

from simfusion.learn.device import GPU_EPOCHS, GPU_TIME_BUDGET, GPU_VIEWS, plan_training
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


def parsed(*argv):
    from simfusion.cli.train import build_parser

    return build_parser().parse_args(["--model_save_path", "m", *argv])


def test_the_command_asks_for_gpus_only_when_the_profile_may_use_them(monkeypatch):
    import simfusion.cli.train as cli

    def no_gpu_query():
        raise AssertionError("the cpu profile must not ask TensorFlow for GPUs")

    monkeypatch.setattr(cli, "gpu_names", no_gpu_query)
    monkeypatch.setattr(cli, "default_views", lambda: DEFAULTS)
    cpu = cli.training_plan(parsed("--profile", "cpu"), None)
    assert (cpu.views, cpu.epochs, cpu.time_budget) == (DEFAULTS, TrainOptions.epochs, None)


def test_on_a_gpu_the_command_keeps_the_views_given_and_leaves_students_out_of_ray(monkeypatch):
    import simfusion.cli.train as cli

    monkeypatch.setattr(cli, "gpu_names", lambda: GPU)
    monkeypatch.setattr(cli, "default_views", lambda: DEFAULTS)
    given = cli.training_plan(parsed("--epochs", "7"), ("thumbnail",))
    assert (given.profile, given.views, given.epochs, given.time_budget) == ("gpu", ("thumbnail",), 7, 600.0)
    assert cli.training_plan(parsed(), None).views == (*DEFAULTS, "student")
    assert cli.training_plan(parsed("--distributor", "ray"), None).views == DEFAULTS


def test_resume_says_when_the_earlier_run_was_planned_otherwise(tmp_path, monkeypatch, caplog):
    import json

    import simfusion.cli.train as cli

    monkeypatch.setattr(cli, "gpu_names", lambda: [])
    monkeypatch.setattr(cli, "default_views", lambda: DEFAULTS)
    (tmp_path / "training.json").write_text(
        json.dumps({"views": {v: {} for v in (*DEFAULTS, "student")}, "epochs": 100, "device": "GPU (x)"})
    )
    args = parsed("--resume")
    args.model_save_path = str(tmp_path)
    with caplog.at_level(logging.WARNING):
        cli.training_plan(args, None)
    assert "trains again from the start" in caplog.text and "GPU (x)" in caplog.text
    caplog.clear()
    (tmp_path / "training.json").write_text(json.dumps({"views": {v: {} for v in DEFAULTS}, "epochs": 20}))
    with caplog.at_level(logging.WARNING):
        cli.training_plan(args, None)
    assert "trains again" not in caplog.text
