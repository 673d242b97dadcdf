"""benchmarks/semi_supervised.py in --quick mode: every code path, a resumed invocation, the table."""

import json

from .utils import load_benchmark


def test_quick_semi_supervised_benchmark_records_and_resumes(tmp_path, capsys):
    benchmark = load_benchmark("semi_supervised")
    results_path = tmp_path / "results.json"
    common = ["--quick", "--rows", "jdcl,replay_buffer_200", "--seeds", "0", "--results", str(results_path)]
    common += ["--work_dir", str(tmp_path / "runs")]
    results = benchmark.main(common)
    assert set(results["rows"]) == {"jdcl@5%", "jdcl@0.8%", "replay_buffer_200@5%", "replay_buffer_200@0.8%"}
    for entry in results["rows"].values():
        assert entry["seeds"] == [0] and len(entry["accuracy_matrix"][0]) == 5
        assert 0.0 <= entry["average_accuracy"][0] <= 1.0
    assert results["rows"]["replay_buffer_200@0.8%"]["fields"]["labeled_fraction"] == 0.008
    # Pseudo-label coverage and precision per task, measured with the labels the learner never saw.
    quality = results["rows"]["jdcl@5%"]
    assert len(quality["pseudo_label_coverage"][0]) == len(quality["pseudo_label_precision"][0]) == 5
    assert all(0.0 <= value <= 1.0 for value in quality["pseudo_label_coverage"][0])
    # A second invocation finds everything recorded and trains nothing.
    before = json.loads(results_path.read_text())
    again = benchmark.main(common)
    assert again["rows"] == before["rows"]
    table = benchmark.format_table(again)
    assert "| jdcl |" in table and "(1 seed)" in table and "| finetune | — | — |" in table
