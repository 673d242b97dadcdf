"""The replay buffer and the `replay_buffer` strategy: policies on hand-made cases, batches, a resumed buffer."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jdcl.buffer import ReplayBuffer
from jdcl.stage_data import StageData
from jdcl.tensor_data import TensorData
from jdcl.trainer import train_jdcl

from .test_reliability import tiny_config
from .utils import run_killed_when_logged


def examples(labels: list[int]) -> TensorData:
    # Each image holds its own index, so that the tests can tell which examples were kept.
    images = torch.arange(len(labels), dtype=torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return TensorData(images=images, labels=torch.tensor(labels))


def test_class_balanced_buffer_keeps_an_equal_share_of_every_seen_class():
    buffer = ReplayBuffer.empty((1, 2, 2)).updated(examples([0] * 5 + [1] * 5), 6, "class_balanced", seed=0)
    assert buffer.labels.tolist().count(0) == buffer.labels.tolist().count(1) == 3
    # A third class arrives: 7 places over three classes are 3 / 2 / 2, the old ones drawn from what was kept.
    kept_before = set(buffer.images[:, 0, 0, 0].tolist())
    buffer = buffer.updated(examples([2] * 4), 7, "class_balanced", seed=1)
    assert [buffer.labels.tolist().count(c) for c in (0, 1, 2)] == [3, 2, 2]
    old = buffer.images[buffer.labels < 2][:, 0, 0, 0].tolist()
    assert set(old) <= kept_before
    assert buffer.num_seen == 14
    # Seeded: the same offer gives the same buffer.
    first, second = (
        ReplayBuffer.empty((1, 2, 2)).updated(examples([0] * 5 + [1] * 5), 6, "class_balanced", seed=0)
        for _ in range(2)
    )
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_reservoir_buffer_fills_then_replaces_with_the_reservoir_probability():
    buffer = ReplayBuffer.empty((1, 2, 2)).updated(examples([0, 0, 1]), 4, "reservoir", seed=0)
    assert buffer.labels.tolist() == [0, 0, 1] and buffer.num_seen == 3
    # Over many seeds, each of 20 streamed examples ends in a 4-place buffer with probability 4/20.
    stream = examples([0] * 10 + [1] * 10)
    counts = torch.zeros(20)
    for seed in range(300):
        kept = ReplayBuffer.empty((1, 2, 2)).updated(stream, 4, "reservoir", seed=seed)
        assert len(kept) == 4
        counts[kept.images[:, 0, 0, 0].long()] += 1
    assert torch.allclose(counts / 300, torch.full((20,), 0.2), atol=0.08)
    with pytest.raises(ValueError, match="buffer_policy"):
        buffer.updated(stream, 4, "fifo", seed=0)


def test_a_batch_is_half_new_data_and_half_buffer():
    new = examples([5] * 10)
    buffer = examples([0, 1, 2, 3])
    batch = StageData(real=new, buffer=buffer).sample(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert batch.labels[:4].tolist() == [5] * 4 and set(batch.labels[4:].tolist()) <= {0, 1, 2, 3}
    assert batch.is_old.tolist() == [False] * 4 + [True] * 4
    assert batch.images.dtype == torch.float32 and batch.images.min() >= -1 and batch.images.max() <= 1


def test_replay_buffer_run_keeps_the_buffer_and_a_killed_run_resumes_with_it(tmp_path):
    settings = {
        "strategy": "replay_buffer",
        "buffer_size": 12,
        "num_tasks": 3,
        "class_order": [0, 1, 2, 3, 4, 5],
        "local_train_steps": 3,
        "global_train_steps": 3,
        "checkpointing_steps": 2,
    }
    reference = train_jdcl(tiny_config(tmp_path / "reference", **settings))
    assert reference["rehearsal"]["1"] == {"stored": 12, "per_class": {"0": 6, "1": 6}}
    assert reference["rehearsal"]["3"] == {"stored": 12, "per_class": {str(c): 2 for c in range(6)}}
    assert set(reference["stage_seconds"]["2"]) == {"replay", "task_total"}

    output_dir = tmp_path / "run"
    run_killed_when_logged(tiny_config(output_dir, **settings), "task_3/replay/loss", step=5)
    resumed = train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]
    for k in (1, 2, 3):
        expected = load_file(tmp_path / "reference" / "state" / f"task-{k}" / "buffer.safetensors")
        actual = load_file(output_dir / "state" / f"task-{k}" / "buffer.safetensors")
        assert all(torch.equal(expected[name], actual[name]) for name in expected)
        weights = f"task-{k}/unet/diffusion_pytorch_model.safetensors"
        expected, actual = load_file(tmp_path / "reference" / weights), load_file(output_dir / weights)
        assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert json.loads((output_dir / "metrics.json").read_text())["rehearsal"] == reference["rehearsal"]
