"""benchmarks/speed_settings.py: medians and speed-ups on hand-computed rounds, and one real round on the CPU."""

import json

import pytest

from .utils import load_benchmark


def round_figures(local_ms, global_ms, sampling, seconds=10.0):
    return {
        "local_ms": local_ms,
        "global_ms": global_ms,
        "sampling_images_per_second": sampling,
        "local_fraction_of_peak": None,
        "process_seconds": seconds,
    }


def test_medians_and_speedups_of_hand_made_rounds():
    benchmark = load_benchmark("speed_settings")
    medians = benchmark.summarize(
        {
            "plain": [round_figures(100, 200, 50), round_figures(120, 210, 40), round_figures(90, 190, 60)],
            "compile": [round_figures(50, 100, 100, seconds=300), round_figures(60, 120, 80, seconds=20)],
        }
    )
    assert medians["plain"]["local_ms"] == 100 and medians["plain"]["sampling_images_per_second"] == 50
    assert medians["plain"]["local_speedup"] == 1.0 and medians["plain"]["local_fraction_of_peak"] is None
    # Two rounds: the median is their mean. Speed-ups are above 1 when faster, for times and images/s alike.
    assert medians["compile"]["local_ms"] == 55 and medians["compile"]["process_seconds"] == 160
    assert medians["compile"]["local_speedup"] == pytest.approx(100 / 55)
    assert medians["compile"]["global_speedup"] == pytest.approx(200 / 110)
    assert medians["compile"]["sampling_speedup"] == pytest.approx(90 / 50)
    # Without the plain path there is nothing to compare with.
    assert "local_speedup" not in benchmark.summarize({"compile": [round_figures(50, 100, 100)]})["compile"]


def test_one_round_of_two_settings_on_the_cpu(tmp_path):
    benchmark = load_benchmark("speed_settings")
    output = tmp_path / "settings.json"
    report = benchmark.main(
        ["--settings", "plain", "adam_fused", "--rounds", "1", "--train_batch_size", "4", "--warmup", "1"]
        + ["--steps", "1", "--sampling_steps", "2", "--threads", "1", "--output", str(output)]
    )
    assert json.loads(output.read_text())["medians"] == report["medians"]
    for setting in ("plain", "adam_fused"):
        (run,) = report["runs"][setting]
        assert run["local_ms"] > 0 and run["global_ms"] > 0 and run["sampling_images_per_second"] > 0
    assert report["medians"]["adam_fused"]["local_speedup"] > 0
