"""benchmarks/semi_supervised.py in --quick mode: every code path, a resumed invocation, the table."""

import json

from .utils import load_benchmark


def test_quick_semi_supervised_benchmark_records_and_resumes(tmp_path, capsys):
    benchmark = load_benchmark("semi_supervised")
    results_path = tmp_path / "results.json"
    common = ["--quick", "--rows", "jdcl,replay_buffer_200", "--seeds", "0", "--results", str(results_path)]
    common += ["--work_dir", str(tmp_path / "runs")]
    results = benchmark.main(common)
    # Every row at both few-labels settings, and jdcl with every label: the supervised run under the same budget.
    assert set(results["rows"]) == {
        "jdcl@5%",
        "jdcl@0.8%",
        "jdcl@100%",
        "replay_buffer_200@5%",
        "replay_buffer_200@0.8%",
    }
    for entry in results["rows"].values():
        assert entry["seeds"] == [0] and len(entry["accuracy_matrix"][0]) == 5
        assert 0.0 <= entry["average_accuracy"][0] <= 1.0
        assert entry["fields"]["unlabeled_batch_ratio"] == benchmark.UNLABELED_BATCH_RATIO
    assert results["rows"]["replay_buffer_200@0.8%"]["fields"]["labeled_fraction"] == 0.008
    assert results["rows"]["jdcl@100%"]["fields"]["labeled_fraction"] is None
    assert results["budget"]["semi_supervised_stage"] == benchmark.STAGE_VERSION
    # Pseudo-labels per task, as the runs counted them while they trained (none without unlabelled images).
    for key in ("jdcl@5%", "replay_buffer_200@0.8%"):
        entry = results["rows"][key]
        for name in ("pseudo_label_coverage", "pseudo_label_precision", "pseudo_label_old_class_share"):
            assert len(entry[name][0]) == 5
            assert all(value is None or 0.0 <= value <= 1.0 for value in entry[name][0])
    assert results["rows"]["jdcl@5%"]["pseudo_label_old_class_share"][0][0] in (0.0, None)  # task 1 has no old class
    assert results["rows"]["jdcl@100%"]["pseudo_label_coverage"] == [[]]
    # A second invocation finds everything recorded and trains nothing.
    before = json.loads(results_path.read_text())
    again = benchmark.main(common)
    assert again["rows"] == before["rows"]
    table = benchmark.format_table(again)
    assert "| jdcl |" in table and "(1 seed)" in table and "| finetune | — | — | — |" in table
