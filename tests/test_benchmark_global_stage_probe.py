"""`benchmarks/global_stage_probe.py` on a tiny two-task jdcl run of the bundled digits."""

import json

import pytest
import torch

from jdcl import JDCLPipeline
from jdcl.trainer import train_jdcl

from .test_trainer import tiny_config
from .utils import load_benchmark


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("probe") / "run"
    metrics = train_jdcl(tiny_config(output_dir, local_train_steps=4, global_train_steps=4))
    return output_dir, metrics


def test_the_recorded_stage_replays_exactly_and_variants_are_recorded(tiny_run, tmp_path):
    benchmark = load_benchmark("global_stage_probe")
    run_dir, metrics = tiny_run
    results_path = tmp_path / "probe.json"

    results = benchmark.probe(run_dir, results_path, ["recorded", "more_new_rehearsal"], extra_per_class=2)

    (entry,) = results["runs"].values()
    final_row = metrics["accuracy_matrix"][-1]
    # Stages are seeded by (seed, task, stage, step): the replay is the run's own global stage, bit for bit.
    assert entry["recorded"]["accuracy_per_task"] == final_row
    assert entry["variants"]["recorded"]["accuracy_per_task"] == final_row
    assert entry["variants"]["recorded"]["matches_recorded_run"] is True
    more = entry["variants"]["more_new_rehearsal"]
    assert len(more["accuracy_per_task"]) == 2
    assert more["average_accuracy"] == pytest.approx(sum(more["accuracy_per_task"]) / 2)
    new = entry["recorded"]["new_classes"]
    # Among all seen classes it is never easier than among the new classes alone, and its misses split as counted.
    assert new["accuracy_among_seen_classes"] <= new["accuracy_among_new_classes"] + 1e-9
    assert 0.0 <= new["called_an_old_class"] <= 1.0 - new["accuracy_among_seen_classes"] + 1e-9
    assert json.loads(results_path.read_text()) == results

    # A rerun skips what is recorded and adds only what is new.
    before = results_path.read_text()
    benchmark.probe(run_dir, results_path, ["recorded"], extra_per_class=2)
    assert results_path.read_text() == before
    with pytest.raises(SystemExit, match="extra_per_class 2"):
        benchmark.probe(run_dir, results_path, ["recorded"], extra_per_class=3)
    assert "| recorded |" in benchmark.format_table(results)


def test_the_replayed_stage_has_the_recorded_weights(tiny_run):
    benchmark = load_benchmark("global_stage_probe")
    run_dir, _ = tiny_run
    stage = benchmark.RecordedGlobalStage(run_dir)
    replayed = stage.train("recorded", extra_per_class=0).state_dict()
    recorded = JDCLPipeline.from_pretrained(run_dir / "task-2").unet.state_dict()
    assert replayed.keys() == recorded.keys()
    assert all(torch.equal(replayed[name], recorded[name]) for name in recorded)
    # A variant trains another model from the same start.
    longer = stage.train("longer", extra_per_class=0).state_dict()
    assert not all(torch.equal(longer[name], recorded[name]) for name in recorded)


def test_unknown_variant_and_task_without_global_stage_are_refused(tiny_run, tmp_path):
    benchmark = load_benchmark("global_stage_probe")
    run_dir, _ = tiny_run
    with pytest.raises(SystemExit, match="Unknown variants"):
        benchmark.probe(run_dir, tmp_path / "probe.json", ["bigger"])
    with pytest.raises(SystemExit, match="task 1 has no global stage"):
        benchmark.probe(run_dir, tmp_path / "probe.json", ["recorded"], task=1)
    # An ablation's global stage is not the one the probe trains.
    ablation = tmp_path / "ablation"
    ablation.mkdir()
    identity = json.loads((run_dir / "run_config.json").read_text())
    identity["identity"]["no_distillation"] = True
    (ablation / "run_config.json").write_text(json.dumps(identity))
    with pytest.raises(SystemExit, match="distilled global stage"):
        benchmark.probe(ablation, tmp_path / "probe.json", ["recorded"])
