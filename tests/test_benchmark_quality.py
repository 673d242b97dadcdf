"""benchmarks/quality.py in --quick mode: every code path, a resumed invocation, the rank correlation by hand."""

import json

import pytest

from .utils import load_benchmark


def test_forgetting_pairs_and_spearman_on_a_hand_made_case():
    benchmark = load_benchmark("quality")
    quality = {
        "1": {"referee": {"samples": {}}},
        "2": {"referee": {"rehearsal": {"per_class": {"0": 5.0, "1": 1.0}}}},
        "3": {"referee": {"rehearsal": {"per_class": {"0": 4.0, "1": 2.0, "2": 3.0, "3": None}}}},
    }
    class_accuracy = [
        {"0": 1.0, "1": 1.0},
        {"0": 0.5, "1": 0.875, "2": 1.0, "3": 1.0},
        {"0": 0.25, "1": 0.75, "2": 0.75, "3": 0.875, "4": 1.0, "5": 1.0},
    ]
    pairs = benchmark.forgetting_pairs(quality, class_accuracy)
    assert pairs == [(5.0, 0.5), (1.0, 0.125), (4.0, 0.25), (2.0, 0.125), (3.0, 0.25)]
    # Ranks of x: 5, 1, 4, 2, 3; of y (ties averaged): 5, 1.5, 3.5, 1.5, 3.5. Their deviations from the mean rank 3
    # multiply to 9, and square to 10 and 9: rho = 9 / sqrt(90).
    correlation = benchmark.spearman(pairs)
    assert correlation["num_pairs"] == 5
    assert correlation["rho"] == pytest.approx(9 / 90**0.5)
    assert benchmark.spearman(pairs[:2])["rho"] is None


def test_quick_quality_benchmark_records_and_resumes(tmp_path):
    benchmark = load_benchmark("quality")
    results_path = tmp_path / "results.json"
    common = ["--quick", "--rows", "jdcl,finetune", "--seeds", "0", "--results", str(results_path)]
    common += ["--work_dir", str(tmp_path / "runs")]
    results = benchmark.main(common)
    assert set(results["rows"]) == {"jdcl", "finetune"}
    jdcl = results["rows"]["jdcl"]["runs"][0]
    assert len(jdcl["quality"]) == 5 and len(jdcl["class_accuracy"]) == 5
    assert set(jdcl["class_accuracy"][-1]) == {str(c) for c in range(10)}
    assert jdcl["quality"]["5"]["referee"]["rehearsal"]["fd"] >= 0.0
    assert 0.0 <= jdcl["in_distribution"]["ks_statistic"] <= 1.0
    assert results["rows"]["finetune"]["runs"][0]["in_distribution"] is None
    # Every old class of tasks 2-5 with at least two rehearsal images gives a pair.
    assert 0 < len(jdcl["forgetting_pairs"]) <= 2 + 4 + 6 + 8
    assert set(results["rank_correlation"]) == {"jdcl"}
    assert results["quality_claim"]["jdcl_below_separate"] is None  # separate did not run
    # The verdict is seed by seed: one seed each way is no verdict.
    separate = {"runs": [dict(jdcl, seed=0, quality={"1": {"referee": {"samples": {"fd": 1.0}}}})]}
    mixed = {"rows": {"jdcl": results["rows"]["jdcl"], "separate": separate}}
    mixed["rows"]["jdcl"] = {"runs": [dict(jdcl, quality={"1": {"referee": {"samples": {"fd": 2.0}}}})]}
    mixed["rows"]["jdcl"]["runs"].append(dict(jdcl, seed=1, quality={"1": {"referee": {"samples": {"fd": 0.5}}}}))
    separate["runs"].append(dict(jdcl, seed=1, quality={"1": {"referee": {"samples": {"fd": 1.0}}}}))
    benchmark.summarize(mixed)
    assert mixed["quality_claim"]["jdcl_below_separate"] == "mixed: supported on 1 of 2 seeds"
    # A second invocation finds everything recorded and trains nothing.
    before = json.loads(results_path.read_text())
    assert benchmark.main(common)["rows"] == before["rows"]
    table = benchmark.format_table(before)
    assert "| jdcl | rehearsal |" in table and "| finetune | samples |" in table
