"""The rehearsal module: quotas, labelling by the generating model, first/confident selection, the fill rule."""

import pytest
import torch

from jdcl.rehearsal import RehearsalSampler, RehearsalSet, flip_and_shift

from .utils import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_rehearsal_meets_quotas_and_labels_with_own_classifier(pipe):
    output = RehearsalSampler(4, batch_size=8, num_inference_steps=2).sample(
        pipe, [0, 1, 2], 4, generator=torch.manual_seed(0), show_progress=False
    )
    assert output.images.shape == (12, 1, 16, 16)
    assert output.labels.tolist().count(0) == output.labels.tolist().count(1) == output.labels.tolist().count(2) == 4
    assert output.num_generated >= 12 - output.num_filled
    assert output.num_generated <= 24
    assert output.images.min() >= -1 and output.images.max() <= 1
    # Kept (not filled) samples carry the label the model's own classifier gives among `classes`.
    predicted = pipe.masked_logits(output.images, [0, 1, 2]).argmax(-1)
    agreement = (predicted == output.labels).float().mean()
    assert agreement >= (12 - output.num_filled) / 12 - 1e-6


def test_rehearsal_guided_sampler_and_per_class_quotas(pipe):
    sampler = RehearsalSampler(3, batch_size=4, num_inference_steps=2, sampler="guided", guidance_scale=10.0)
    output = sampler.sample(pipe, [1, 3], {1: 3, 3: 2}, generator=torch.manual_seed(0), show_progress=False)
    assert output.labels.tolist().count(1) == 3 and output.labels.tolist().count(3) == 2


def test_rehearsal_fill_rule_when_sampling_budget_is_exhausted(pipe):
    # A budget of 1x the quota with a random model leaves classes short: they get filled to the exact quota.
    sampler = RehearsalSampler(5, batch_size=20, num_inference_steps=1, max_sampling_factor=1.0)
    output = sampler.sample(pipe, [0, 1, 2, 3], 5, show_progress=False)
    assert output.num_generated == 20
    assert output.num_filled > 0
    assert torch.bincount(output.labels, minlength=4).tolist() == [5, 5, 5, 5]


def test_rehearsal_confident_selection_keeps_the_most_confident_samples():
    pipe = tiny_pipeline()

    def draw_18() -> torch.Tensor:
        generator = torch.manual_seed(4)
        return torch.cat(
            [pipe.sample_images(6, num_inference_steps=2, generator=generator, show_progress=False) for _ in range(3)]
        )

    # An untrained head calls every sample one class; shift its bias so that the 18 draws split between 0 and 1.
    with torch.no_grad():
        logits = pipe.masked_logits(draw_18(), [0, 1])
        pipe.unet.classifier.linear_2.bias[0] += (logits[:, 1] - logits[:, 0]).median() + 1e-4

    sampler = RehearsalSampler(3, batch_size=6, num_inference_steps=2, max_sampling_factor=3.0, selection="confident")
    output = sampler.sample(pipe, [0, 1], 3, generator=torch.manual_seed(4), show_progress=False)
    # The whole budget is drawn, whatever the quotas: 3 x (2 classes x 3).
    assert output.num_generated == 18
    assert torch.bincount(output.labels, minlength=2).tolist() == [3, 3]

    # The same 18 samples again, from the same generator: each class keeps its most confident ones.
    drawn = draw_18()
    confidences, labels = pipe.masked_logits(drawn, [0, 1]).softmax(-1).max(-1)
    for class_index in (0, 1):
        mine = labels == class_index
        kept = output.images[output.labels == class_index]
        # Both classes have more candidates than their quota, so the choice is really made.
        assert int(mine.sum()) > 3
        best = drawn[mine][confidences[mine].argsort(descending=True)[:3]]
        torch.testing.assert_close(kept, best)
    assert output.num_filled == 0


def test_rehearsal_errors(pipe):
    with pytest.raises(ValueError, match="sampler"):
        RehearsalSampler(1, sampler="magic")
    with pytest.raises(ValueError, match="selection"):
        RehearsalSampler(1, selection="best")
    with pytest.raises(ValueError, match="repeated"):
        RehearsalSampler(1).sample(pipe, [0, 0], 1)
    with pytest.raises(ValueError, match="Unknown classes"):
        RehearsalSampler(1).sample(pipe, [5], 1)


def test_flip_and_shift_copies_are_shifted_or_flipped_samples():
    images = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16) / 512
    copies = flip_and_shift(images, 6, torch.manual_seed(0))
    assert len(copies) == 6 and all(copy.shape == (1, 16, 16) for copy in copies)
    # Every copy is one of the two samples, shifted by at most 2 pixels (16 // 8) and maybe mirrored.
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    for copy in copies:
        candidates = [
            view
            for source in padded
            for top in range(5)
            for left in range(5)
            for view in (
                source[:, top : top + 16, left : left + 16],
                source[:, top : top + 16, left : left + 16].flip(-1),
            )
        ]
        assert any(torch.equal(copy, candidate) for candidate in candidates)


def test_rehearsal_set_save_load_round_trip(tmp_path):
    rehearsal = RehearsalSet(
        images=torch.rand(3, 1, 4, 4) * 2 - 1,
        labels=torch.tensor([0, 0, 2]),
        is_old=torch.tensor([True, True, False]),
        num_generated=7,
        num_filled=1,
        num_outside=2,
    )
    rehearsal.save(tmp_path / "rehearsal.safetensors")
    loaded = RehearsalSet.load(tmp_path / "rehearsal.safetensors")
    assert torch.equal(loaded.images, rehearsal.images) and torch.equal(loaded.labels, rehearsal.labels)
    assert torch.equal(loaded.is_old, rehearsal.is_old)
    assert (loaded.num_generated, loaded.num_filled, loaded.num_outside) == (7, 1, 2)
    assert loaded.summary() == {"generated": 7, "kept": 2, "filled": 1, "outside": 2, "per_class": {"0": 2, "2": 1}}
    assert [path.name for path in tmp_path.iterdir()] == ["rehearsal.safetensors"]
    # A set saved before `outside` was counted loads with it unknown, not zero.
    rehearsal.num_outside = None
    rehearsal.save(tmp_path / "rehearsal.safetensors")
    assert RehearsalSet.load(tmp_path / "rehearsal.safetensors").summary()["outside"] is None


def test_rehearsal_counts_samples_whose_whole_head_argmax_is_not_rehearsed():
    # The authors' code drops samples whose argmax over the whole head is another class; jdcl counts them.
    pipe = tiny_pipeline()
    sampler = RehearsalSampler(3, batch_size=6, num_inference_steps=1, max_sampling_factor=2.0)
    with torch.no_grad():
        pipe.unet.classifier.linear_2.bias[3] += 1e4
    outside = sampler.sample(pipe, [0, 1, 2], 3, generator=torch.manual_seed(0), show_progress=False)
    assert outside.num_outside == outside.num_generated > 0
    # Labels stay among the rehearsed classes.
    assert set(outside.labels.tolist()) <= {0, 1, 2}
    with torch.no_grad():
        pipe.unet.classifier.linear_2.bias[1] += 2e4
    inside = sampler.sample(pipe, [0, 1, 2], 3, generator=torch.manual_seed(0), show_progress=False)
    assert inside.num_outside == 0
