"""benchmarks/stage_speed.py on a tiny CPU run: every figure is there, and the global step counts its teachers."""

import json

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


def test_peak_of_known_gpus():
    benchmark = load_benchmark("stage_speed")
    assert benchmark.peak_tflops("NVIDIA H200") == 989.0
    assert benchmark.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert benchmark.peak_tflops("NVIDIA L4") == 121.0
    assert benchmark.peak_tflops("Some Future GPU") is None and benchmark.peak_tflops(None) is None
