"""benchmarks/stage_speed.py on a tiny CPU run: every figure is there, and the global step counts its teachers."""

import json

import pytest

from .utils import load_benchmark


def test_stage_speed_reports_every_phase_on_the_cpu(tmp_path):
    benchmark = load_benchmark("stage_speed")
    output = tmp_path / "speed.json"
    report = benchmark.main(
        ["--train_batch_size", "4", "--warmup", "1", "--steps", "1", "--sampling_steps", "2", "--threads", "1"]
        + ["--output", str(output)]
    )
    assert json.loads(output.read_text())["local_step"] == report["local_step"]
    local, global_ = report["local_step"], report["global_step"]
    for step in (local, global_):
        assert step["seconds_per_step"] > 0 and step["images_per_second"] > 0 and step["peak_memory_gib"] > 0
        assert step["fraction_of_peak"] is None  # no peak for a CPU
        assert {"jdcl.batch", "jdcl.forward", "jdcl.backward", "jdcl.optimizer", "jdcl.ema"} <= set(
            step["breakdown_of_one_step"]
        )
    # Two teachers read every sample: the global step counts more FLOPs than the local one, in a range of its own.
    assert (
        "jdcl.teachers" in global_["breakdown_of_one_step"] and "jdcl.teachers" not in local["breakdown_of_one_step"]
    )
    assert global_["gflops_per_step"] > local["gflops_per_step"] > 0
    sampling = report["rehearsal_sampling"]
    assert sampling["images_per_second"] > 0 and sampling["gflops_per_image"] > 0 and sampling["scheduler"] == "ddim"
    # The augmented views are timed even for a preset that trains without them (the demo): then no share of a step.
    augmentation = report["augmentation"]
    assert augmentation["batch_size"] == 4 and augmentation["ms_per_batch"] > 0
    assert augmentation["preset_augments"] is False and augmentation["share_of_local_step"] is None


def test_augmentation_only_times_the_views_alone(tmp_path):
    benchmark = load_benchmark("stage_speed")
    report = benchmark.main(["--train_batch_size", "8", "--augmentation_only", "--output", str(tmp_path / "a.json")])
    assert "local_step" not in report and report["augmentation"]["batch_size"] == 8
    assert report["augmentation"]["images_per_second"] == pytest.approx(
        8 / report["augmentation"]["ms_per_batch"] * 1e3
    )


def test_peak_of_known_gpus():
    benchmark = load_benchmark("stage_speed")
    assert benchmark.peak_tflops("NVIDIA H200") == 989.0
    assert benchmark.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert benchmark.peak_tflops("NVIDIA L4") == 121.0
    assert benchmark.peak_tflops("Some Future GPU") is None and benchmark.peak_tflops(None) is None


def test_schedule_hours_on_a_hand_made_schedule():
    from jdcl.config import JDCLTrainingConfig

    benchmark = load_benchmark("stage_speed")
    config = JDCLTrainingConfig(
        num_tasks=3,
        first_task_train_steps=10,
        local_train_steps=4,
        global_train_steps=6,
        replay_samples_per_class=2,
        replay_inference_steps=20,
        replay_max_sampling_factor=2.0,
    )
    hours = benchmark.schedule_hours(
        config,
        num_classes=6,
        local={"seconds_per_step": 1.0},
        global_={"seconds_per_step": 2.0},
        sampling={"images_per_second": 10.0, "num_inference_steps": 5},
    )
    # Training: 10 * 1 + 2 * (4 * 1 + 6 * 2) = 42 s. Rehearsal: 2 per class of the 4, then 6 seen classes = 20
    # images, at 20 / (10 * 5) = 0.4 s each: 8 s, or 16 s when every kept sample took two draws.
    assert hours["training_hours"] * 3600 == pytest.approx(42.0)
    assert [h * 3600 for h in hours["rehearsal_hours"]] == pytest.approx([8.0, 16.0])
    assert [h * 3600 for h in hours["total_hours"]] == pytest.approx([50.0, 58.0])
