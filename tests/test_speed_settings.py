"""The speed settings (`adam_fused`, `channels_last`, `compile`) train the same model as the plain path."""

import pytest
import torch
import torch._dynamo
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DynamoBackend

from jdcl.stage import StageRunner
from jdcl.trainer import ContinualTrainer, train_jdcl

from .test_trainer import tiny_config
from .utils import run_killed_when_logged, task_unet_weights


SETTINGS = {"local_train_steps": 10, "global_train_steps": 10, "checkpointing_steps": 5, "grid_samples_per_class": 0}
# Relative L2 distance of the weights allowed between a speed setting and the plain path after two tasks (10 + 10
# steps each). Measured on an AMD EPYC: fused AdamW 3.6e-6, channels-last 7.2e-5; the smallest behaviour changes tried
# (one more step, lr +1%) move the weights by 7.7e-3 or more (tests/test_reference_runs.py).
TOLERANCE = 1e-3


def relative_distance(weights: dict, reference: dict) -> float:
    assert weights.keys() == reference.keys()
    flat = torch.cat([weights[name].double().flatten() for name in sorted(weights)])
    flat_reference = torch.cat([reference[name].double().flatten() for name in sorted(reference)])
    return float((flat - flat_reference).norm() / flat_reference.norm())


@pytest.fixture
def fresh_accelerator_state():
    # Accelerate keeps one state per process, dynamo plugin included: a test that compiles starts and ends clean.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def compiling_accelerator() -> Accelerator:
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True, dynamo_backend="aot_eager")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("plain")
    train_jdcl(tiny_config(output_dir, **SETTINGS))
    return output_dir


@pytest.mark.parametrize("setting", ["adam_fused", "channels_last"])
def test_a_speed_setting_trains_the_plain_path_model(tmp_path, plain_run, setting):
    train_jdcl(tiny_config(tmp_path, **SETTINGS, **{setting: True}))
    for task in (1, 2):
        weights = task_unet_weights(tmp_path, task)
        assert relative_distance(weights, task_unet_weights(plain_run, task)) <= TOLERANCE, task
        # Saved weights are in the usual memory format, whatever the run trained in.
        assert all(tensor.is_contiguous() for tensor in weights.values())


def test_a_compiled_run_is_captured_whole_and_resumes_to_the_eager_result(tmp_path, fresh_accelerator_state):
    levers = {"adam_fused": True, "channels_last": True}
    eager_dir = tmp_path / "eager"
    train_jdcl(tiny_config(eager_dir, **SETTINGS, **levers))

    # aot_eager traces and runs the same graphs as inductor without generating code: the arithmetic stays eager's,
    # so the compiled run must give eager's weights bit for bit, through a kill and a resume.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled_dir = tmp_path / "compiled"
    config = tiny_config(compiled_dir, compile=True, **SETTINGS, **levers)
    run_killed_when_logged(config, "task_2/global/loss", step=9, accelerator=compiling_accelerator())
    assert (compiled_dir / "checkpoints" / "task-2-global" / "checkpoint-5").is_dir()
    config = tiny_config(compiled_dir, compile=True, resume_from_checkpoint="latest", **SETTINGS, **levers)
    # A new process after the kill: a new accelerator.
    train_jdcl(config, accelerator=compiling_accelerator())

    counters = torch._dynamo.utils.counters
    # The training steps of both stages, the teachers and the sampling UNet were compiled, none split by a break.
    assert counters["stats"]["unique_graphs"] >= 4
    assert not counters["graph_break"], dict(counters["graph_break"])
    for task in (1, 2):
        eager, compiled = task_unet_weights(eager_dir, task), task_unet_weights(compiled_dir, task)
        assert all(torch.equal(eager[name], compiled[name]) for name in eager), task


def test_compile_asks_its_own_accelerator_for_inductor(tmp_path, fresh_accelerator_state, monkeypatch):
    monkeypatch.setattr(StageRunner, "run", lambda *args, **kwargs: pytest.fail("no training in this test"))
    trainer = ContinualTrainer(tiny_config(tmp_path / "run", compile=True))
    assert trainer.accelerator.state.dynamo_plugin.backend == DynamoBackend.INDUCTOR


def test_compile_with_an_accelerator_that_compiles_nothing_is_refused(tmp_path, fresh_accelerator_state):
    with pytest.raises(ValueError, match="compiles nothing.*dynamo_backend"):
        ContinualTrainer(tiny_config(tmp_path / "run", compile=True), accelerator=Accelerator(cpu=True))
    assert not (tmp_path / "run").exists()
