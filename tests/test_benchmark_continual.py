"""`benchmarks/continual.py --quick`: every row runs through `train_jdcl` and lands in the results with its shape."""

import json
import os
from pathlib import Path

import pytest

from jdcl.config import JDCLTrainingConfig

from .utils import load_benchmark


MNIST_10K = Path(
    os.environ.get("JDCL_MNIST10K") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-10k"
)


@pytest.mark.skipif(not MNIST_10K.is_dir(), reason=f"mnist-10k not found at {MNIST_10K} (set JDCL_MNIST10K)")
def test_quick_benchmark_records_every_row(tmp_path, capsys, monkeypatch):
    benchmark = load_benchmark("continual")
    results_path = tmp_path / "results.json"
    argv = [
        "--quick",
        "--results",
        str(results_path),
        "--work_dir",
        str(tmp_path / "runs"),
        "--dataset",
        str(MNIST_10K),
    ]
    benchmark.main(argv)

    results = json.loads(results_path.read_text())
    assert {"dataset", "machine", "date", "budget", "rows", "gap_closure", "in_distribution"} <= set(results)
    assert results["budget"]["local_train_steps"] == benchmark.QUICK_BUDGET["local_train_steps"]
    # The budget records the first task's length resolved, not the `None` that stands for it.
    quick_config = JDCLTrainingConfig.from_dict(benchmark.QUICK_BUDGET)
    assert results["budget"]["first_task_train_steps"] == quick_config.total_first_task_steps
    assert set(results["rows"]) == set(benchmark.ROWS)
    num_tasks = results["budget"]["num_tasks"]
    for row, entry in results["rows"].items():
        assert entry["seeds"] == [0], row
        assert entry["fields"] == benchmark.ROWS[row], row
        for key in ("average_accuracy", "forgetting", "wall_seconds"):
            assert len(entry[key]) == 1 and isinstance(entry[key][0], float), (row, key)
        (matrix,) = entry["accuracy_matrix"]
        assert len(matrix) == num_tasks and all(len(line) == num_tasks for line in matrix), row
        assert all(matrix[i][j] is not None for i in range(num_tasks) for j in range(i + 1)), row
    assert results["gap_closure"] is None or isinstance(results["gap_closure"], float)
    for row in ("jdcl", "separate"):
        figures = results["in_distribution"][row]
        assert figures["seeds"] == [0]
        assert 0.0 <= figures["ks_statistic"][0] <= 1.0
        assert 0.0 < figures["mean_confidence_rehearsal"][0] <= 1.0
        assert 0.0 < figures["mean_confidence_test"][0] <= 1.0
    assert "gap closure" in capsys.readouterr().out

    # A rerun of the same budget skips what is recorded; another budget in the same file is refused.
    benchmark.main(argv + ["--rows", "jdcl"])
    assert json.loads(results_path.read_text())["rows"]["jdcl"]["seeds"] == [0]
    with pytest.raises(SystemExit, match="another budget"):
        benchmark.main(argv + ["--local_train_steps", "2"])
    # A row recorded under other row fields (a changed library default of the jdcl row) is refused too.
    monkeypatch.setitem(benchmark.ROWS, "jdcl", {**benchmark.ROWS["jdcl"], "replay_eta": 0.5})
    with pytest.raises(SystemExit, match="a library default changed"):
        benchmark.main(argv + ["--rows", "jdcl"])


@pytest.mark.skipif(not MNIST_10K.is_dir(), reason=f"mnist-10k not found at {MNIST_10K} (set JDCL_MNIST10K)")
def test_workers_run_pairs_in_parallel_into_one_results_file(tmp_path):
    benchmark = load_benchmark("continual")
    results_path = tmp_path / "results.json"
    argv = ["--quick", "--rows", "finetune,cumulative", "--seeds", "0,1", "--workers", "2"]
    argv += ["--results", str(results_path), "--work_dir", str(tmp_path / "runs"), "--dataset", str(MNIST_10K)]
    results = benchmark.main(argv)

    # Four pairs, two processes at a time, each merging its pair into the file under the lock: none is lost.
    on_disk = json.loads(results_path.read_text())
    assert on_disk == results
    for row in ("finetune", "cumulative"):
        assert sorted(on_disk["rows"][row]["seeds"]) == [0, 1], row
        assert len(on_disk["rows"][row]["average_accuracy"]) == 2, row
    # Without a jdcl row there is nothing to close the gap with.
    assert on_disk["gap_closure"] is None


def _entry(accuracy: float, wall: list[float], task: list[float]) -> dict:
    return {"average_accuracy": [accuracy] * len(wall), "wall_seconds": wall, "task_seconds": task, "seeds": [0, 1]}


def test_targets_on_hand_made_results():
    benchmark = load_benchmark("continual")
    # Every row 2 seeds of 1800 s except jdcl, whose seed 1 was killed and resumed: its wall clock saw only the last
    # 600 s, the trainer's task seconds the whole 2,400 s run.
    rows = {row: _entry(0.5, [1800.0, 1800.0], [1790.0, 1790.0]) for row in benchmark.ROWS}
    rows["finetune"] = _entry(0.2, [1800.0, 1800.0], [1790.0, 1790.0])
    rows["cumulative"] = _entry(1.0, [1800.0, 1800.0], [1790.0, 1790.0])
    rows["jdcl"] = _entry(0.93, [1800.0, 600.0], [1790.0, 2400.0])
    results = {"rows": rows, "gap_closure": None, "in_distribution": {}}
    results["gap_closure"] = benchmark.gap_closure(results)
    assert results["gap_closure"] == pytest.approx((0.93 - 0.2) / (1.0 - 0.2))

    assert benchmark.run_seconds(rows["jdcl"]) == [1800.0, 2400.0]
    status = dict(benchmark.targets(results))
    # 15 pairs of 1800 s and one of 2400 s on 2 workers: 4.08 h.
    assert status["whole benchmark 4.1 h <= 3 h (2 workers, recorded seconds)"] == "not met"
    assert status["gap closure 0.912 >= 0.90"] == "met"
    assert status["separate below jdcl"] == "met"
    assert status["in-distribution claim: KS(jdcl) < KS(separate)"] == "pending (needs jdcl, separate)"

    del rows["separate"]
    status = dict(benchmark.targets(results))
    assert status["whole benchmark 3.6 h <= 3 h (2 workers, recorded seconds)"] == "pending (2 pairs not recorded)"
    assert status["separate below jdcl"] == "pending (needs jdcl, separate)"


def test_a_further_seed_narrows_the_means_but_adds_no_benchmark_hours():
    benchmark = load_benchmark("continual")
    rows = {row: _entry(0.5, [1800.0, 1800.0], [1790.0, 1790.0]) for row in benchmark.ROWS}
    results = {"rows": rows, "gap_closure": None, "in_distribution": {}}
    # 16 pairs of 1800 s on 2 workers: 4.0 h.
    assert dict(benchmark.targets(results))["whole benchmark 4.0 h <= 3 h (2 workers, recorded seconds)"] == "not met"

    rows["single_stage"] = {
        "average_accuracy": [0.5, 0.5, 0.8],
        "wall_seconds": [1800.0, 1800.0, 9000.0],
        "task_seconds": [1790.0, 1790.0, 9000.0],
        "seeds": [0, 1, 2],
    }
    status = dict(benchmark.targets(results))
    assert status["whole benchmark 4.0 h <= 3 h (2 workers, recorded seconds)"] == "not met"
    assert status["single_stage below jdcl"] == "not met"


def test_a_budget_recorded_before_a_field_was_added_still_matches(tmp_path, monkeypatch):
    benchmark = load_benchmark("continual")
    budget = benchmark.make_budget({}, quick=True)
    recorded = {name: value for name, value in budget.items() if name != "learning_rate"}
    # Until the library lists the field as added since, a budget without it is another budget.
    assert benchmark.budget_differences(recorded, budget) == ["learning_rate"]
    monkeypatch.setattr("jdcl.config_schema.ADDED_FIELDS", ("learning_rate",))
    assert benchmark.budget_differences(recorded, budget) == []
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"budget": recorded, "rows": {}}))
    assert benchmark.load_budget_results(path, budget, fresh={})["budget"] == recorded
    # The added field at another value than its default is still another budget.
    other = {**budget, "learning_rate": budget["learning_rate"] * 2}
    assert benchmark.budget_differences(recorded, other) == ["learning_rate"]
    with pytest.raises(SystemExit, match="differs in \\['learning_rate'\\]"):
        benchmark.load_budget_results(path, other, fresh={})
