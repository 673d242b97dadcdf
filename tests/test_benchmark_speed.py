"""`benchmarks/speed.py`: a tiny run of every comparison, on the CPU and under bf16 autocast, lands in its JSON."""

import json

import pytest
import torch

from .utils import load_benchmark


TINY_RUN = ["--config", "demo", "--batch_size", "2", "--num_inference_steps", "2", "--repeats", "2", "--warmup", "0"]
TINY_RUN += ["--train_steps_per_repeat", "1", "--threads", "1"]


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_tiny_speed_run_records_every_comparison(tmp_path, mixed_precision):
    speed = load_benchmark("speed")
    output = tmp_path / "speed.json"
    report = speed.main([*TINY_RUN, "--mixed_precision", mixed_precision, "--breakdown", "--output", str(output)])

    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert report["machine"]["device"] == "cpu"
    assert report["config"]["mixed_precision"] == mixed_precision
    assert report["config"]["batch_size"] == 2
    # On a CPU the joint model and the plain UNet must be bit-identical, or the ratios compare different functions.
    assert report["unet_outputs_max_abs_difference"] == 0.0
    for key in ("sampling_jdcl_over_ddim", "guided_over_unguided", "joint_over_plain_step"):
        result = report[key]
        assert result["ratio"] > 0 and result["flops_ratio"] > 0
        assert isinstance(result["met"], bool)
    # JDCL's unguided pipeline runs exactly the UNet forwards of DDIMPipeline; a joint step costs more than a plain one.
    assert report["sampling_jdcl_over_ddim"]["flops_ratio"] == pytest.approx(1.0)
    assert report["joint_over_plain_step"]["flops_ratio"] > 1.0
    assert report["guided_over_unguided"]["flops_ratio"] > 1.0
    assert len(report["joint_over_plain_step"]["joint_step_seconds"]) == 2
    assert set(report["breakdown"]) == {
        "unet_forward",
        "encoder_forward",
        "guidance_term",
        "guidance_term_frozen_weights",
        "plain_step",
        "joint_step",
        "encoder_step_batch",
        "encoder_step_2x_batch",
    }


def test_default_output_is_named_after_config_device_and_precision(tmp_path, monkeypatch):
    speed = load_benchmark("speed")
    monkeypatch.setattr(speed, "__file__", str(tmp_path / "speed.py"))
    speed.main([*TINY_RUN, "--repeats", "1", "--mixed_precision", "bf16"])
    assert (tmp_path / "results" / "speed_demo_cpu_bf16.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no CUDA device")
def test_cuda_without_a_gpu_says_so():
    speed = load_benchmark("speed")
    with pytest.raises(SystemExit, match="sees no CUDA device here; use --device cpu"):
        speed.main([*TINY_RUN, "--device", "cuda"])
