import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel

from jdcl import JDCLPipeline

from .utils import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_unguided_sampling_matches_diffusers_ddim_pipeline(pipe):
    config = {k: v for k, v in pipe.unet.config.items() if not k.startswith(("_", "num_classes", "classifier"))}
    unet = UNet2DModel(**config).eval()
    unet.load_state_dict({k: v for k, v in pipe.unet.state_dict().items() if not k.startswith("classifier.")})
    ddim = DDIMPipeline(unet=unet, scheduler=pipe.scheduler)
    ddim.set_progress_bar_config(disable=True)
    ours = pipe(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(3), output_type="np").images
    theirs = ddim(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(3), output_type="np").images
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types(pipe, output_type):
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.manual_seed(0), output_type=output_type).images
    if output_type == "pil":
        assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "L"
    elif output_type == "np":
        assert images.shape == (2, 16, 16, 1) and images.min() >= 0 and images.max() <= 1
    else:
        assert images.shape == (2, 1, 16, 16) and images.min() >= 0 and images.max() <= 1
    tuple_output = pipe(batch_size=1, num_inference_steps=2, output_type=output_type, return_dict=False)
    assert isinstance(tuple_output, tuple)


def test_sampling_is_deterministic_with_a_generator(pipe):
    kwargs = {"num_inference_steps": 3, "output_type": "pt"}
    first = pipe(batch_size=2, generator=torch.manual_seed(5), **kwargs).images
    second = pipe(batch_size=2, generator=torch.manual_seed(5), **kwargs).images
    third = pipe(batch_size=2, generator=torch.manual_seed(6), **kwargs).images
    assert torch.equal(first, second)
    assert not torch.equal(first, third)
    guided_a = pipe(class_labels=[1, 2], generator=torch.manual_seed(5), **kwargs).images
    guided_b = pipe(class_labels=[1, 2], generator=torch.manual_seed(5), **kwargs).images
    assert torch.equal(guided_a, guided_b)


def test_ddpm_scheduler_works():
    pipe = tiny_pipeline()
    pipe.scheduler = DDPMScheduler(beta_start=1e-3, beta_end=0.02)
    images = pipe(class_labels=[0, 3], num_inference_steps=3, generator=torch.manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 16, 16)


def test_guidance_raises_target_class_probability():
    pipe = tiny_pipeline()
    # A freshly initialised head is nearly flat (every class ~0.25); sharpen it so that it has an opinion to follow.
    with torch.no_grad():
        pipe.unet.classifier.linear_2.weight.mul_(30)
    target = 2
    kwargs = {"class_labels": [target] * 8, "num_inference_steps": 5, "output_type": "pt"}
    unguided = pipe(guidance_scale=0.0, generator=torch.manual_seed(0), **kwargs).images
    guided = pipe(guidance_scale=30.0, generator=torch.manual_seed(0), **kwargs).images
    p_unguided = pipe.classify(unguided).probabilities[:, target].mean()
    p_guided = pipe.classify(guided).probabilities[:, target].mean()
    assert p_guided > p_unguided + 0.1, (p_guided, p_unguided)


@pytest.fixture(scope="module")
def trained_pipe(tmp_path_factory):
    """A tiny joint model trained for a few seconds on four bundled digits: a classifier worth following."""
    from jdcl.config import JDCLTrainingConfig
    from jdcl.trainer import train_jdcl

    output_dir = tmp_path_factory.mktemp("trained")
    config = JDCLTrainingConfig(
        output_dir=str(output_dir),
        num_tasks=1,
        class_order=[0, 1, 2, 3],
        local_train_steps=150,
        replay_inference_steps=2,
        grid_samples_per_class=0,
        logger="none",
        show_progress=False,
    )
    train_jdcl(config)
    pipe = JDCLPipeline.from_pretrained(output_dir / "task-1")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("clip_sample", [True, False])
def test_guidance_steers_a_trained_model_to_every_class(trained_pipe, clip_sample):
    # Regression: with the scheduler clipping x0 itself, the guidance term survived only in the noise and steered
    # samples away from their class (0% of guided samples in class on the demo model).
    trained_pipe.scheduler = DDIMScheduler(beta_start=1e-3, beta_end=0.02, clip_sample=clip_sample)
    labels = torch.arange(4).repeat_interleave(6)
    kwargs = {"class_labels": labels, "num_inference_steps": 20, "classes": [0, 1, 2, 3], "output_type": "pt"}
    unguided = trained_pipe(guidance_scale=0.0, generator=torch.manual_seed(0), **kwargs).images
    guided = trained_pipe(guidance_scale=3.0, generator=torch.manual_seed(0), **kwargs).images
    accuracy_unguided = (trained_pipe.classify(unguided, classes=[0, 1, 2, 3]).labels == labels).float().mean()
    accuracy_guided = (trained_pipe.classify(guided, classes=[0, 1, 2, 3]).labels == labels).float().mean()
    assert accuracy_guided >= 0.7, (accuracy_guided, accuracy_unguided)
    assert accuracy_guided > accuracy_unguided + 0.3


def test_classify_accepts_pil_numpy_and_tensors(pipe):
    tensors = pipe(batch_size=3, num_inference_steps=2, generator=torch.manual_seed(1), output_type="pt").images
    arrays = tensors.permute(0, 2, 3, 1).numpy()
    pils = [PIL.Image.fromarray((a[..., 0] * 255).round().astype(np.uint8), mode="L") for a in arrays]
    from_tensor = pipe.classify(tensors)
    from_numpy = pipe.classify(arrays)
    from_pil = pipe.classify(pils)
    assert from_tensor.labels.shape == (3,) and from_tensor.probabilities.shape == (3, 4)
    assert torch.allclose(from_tensor.probabilities.sum(-1), torch.ones(3))
    assert torch.allclose(from_tensor.probabilities, from_numpy.probabilities, atol=1e-6)
    assert torch.allclose(from_tensor.probabilities, from_pil.probabilities, atol=2e-2)  # 8-bit rounding
    # An RGB PIL image of another size is converted and resized.
    rgb = PIL.Image.new("RGB", (40, 40), (120, 30, 200))
    assert pipe.classify(rgb).probabilities.shape == (1, 4)
    # Probabilities match the model's own softmax.
    expected = pipe.unet.classify(tensors * 2 - 1).softmax(-1)
    assert torch.allclose(from_tensor.probabilities, expected, atol=1e-6)


def test_classify_restricts_to_classes(pipe):
    images = torch.rand(6, 1, 16, 16)
    output = pipe.classify(images, classes=[1, 3])
    assert set(output.labels.tolist()) <= {1, 3}
    assert torch.all(output.probabilities[:, [0, 2]] == 0)
    assert torch.allclose(output.probabilities.sum(-1), torch.ones(6))


def test_classify_errors(pipe):
    with pytest.raises(ValueError, match="Unknown classes"):
        pipe.classify(torch.rand(1, 1, 16, 16), classes=[0, 9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.classify(torch.rand(1, 1, 16, 16) * 2 - 1 - 0.5)
    with pytest.raises(ValueError, match="channels but the model expects 1"):
        pipe.classify(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="No images"):
        pipe.classify([])


def test_call_errors(pipe):
    with pytest.raises(ValueError, match="output_type"):
        pipe(output_type="jpeg")
    with pytest.raises(ValueError, match="Unknown classes"):
        pipe(class_labels=[7], num_inference_steps=1)
    with pytest.raises(ValueError, match="one label per image"):
        pipe(batch_size=3, class_labels=[0, 1], num_inference_steps=1)


def test_pipeline_rejects_a_checkpoint_of_another_model(tmp_path):
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    with pytest.raises(ValueError, match="JointUNet2DModel"):
        JDCLPipeline(unet=unet, scheduler=DDPMScheduler())
    DDIMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="another model"):
        JDCLPipeline.from_pretrained(tmp_path)


def test_save_and_from_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "JDCLPipeline"
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    reloaded = JDCLPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    kwargs = {"batch_size": 2, "num_inference_steps": 2, "output_type": "pt"}
    assert torch.equal(
        pipe(generator=torch.manual_seed(0), **kwargs).images,
        reloaded(generator=torch.manual_seed(0), **kwargs).images,
    )
    assert reloaded.scheduler.config.beta_start == pytest.approx(1e-3)


def _put_snapshot_in_cache(cache_dir, repo_id, revision, commit_hash, folder):
    repo_folder = cache_dir / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_folder / "snapshots" / commit_hash)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / revision).write_text(commit_hash)


def test_from_pretrained_by_repo_id_and_revision_from_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_dir = tmp_path / "hub-cache"
    for task, seed in (("task-1", 0), ("task-2", 1)):
        folder = tmp_path / task
        tiny_pipeline(seed=seed).save_pretrained(folder)
        _put_snapshot_in_cache(cache_dir, "someone/jdcl-digits", task, f"{seed + 1:040x}", folder)
    first = JDCLPipeline.from_pretrained("someone/jdcl-digits", revision="task-1", cache_dir=cache_dir)
    second = JDCLPipeline.from_pretrained("someone/jdcl-digits", revision="task-2", cache_dir=cache_dir)
    weight = "classifier.linear_2.weight"
    assert torch.equal(first.unet.state_dict()[weight], tiny_pipeline(seed=0).unet.state_dict()[weight])
    assert torch.equal(second.unet.state_dict()[weight], tiny_pipeline(seed=1).unet.state_dict()[weight])
    assert not torch.equal(first.unet.state_dict()[weight], second.unet.state_dict()[weight])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_guided_sampling_on_cuda_takes_labels_from_the_cpu():
    pipe = tiny_pipeline().to("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    images = pipe(class_labels=[0, 3], num_inference_steps=2, generator=generator, output_type="pt").images
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()


# ----------------------------------------------------------------------------------- checkpoints that know their classes


def classes_pipeline() -> JDCLPipeline:
    pipe = tiny_pipeline()
    return JDCLPipeline(
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        class_names=["zero", "one", "two", "three"],
        class_order=[1, 0, 3, 2],
        seen_classes=[1, 0],
        task_index=1,
        num_tasks=2,
    )


def test_a_saved_pipeline_restores_its_classes_and_classifies_among_the_seen_ones(tmp_path):
    classes_pipeline().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["class_names"] == ["zero", "one", "two", "three"] and index["seen_classes"] == [1, 0]
    pipe = JDCLPipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.class_names == ["zero", "one", "two", "three"]
    assert pipe.seen_classes == [1, 0] and pipe.config.class_order == [1, 0, 3, 2]
    assert (pipe.config.task_index, pipe.config.num_tasks) == (1, 2)

    images = torch.rand(6, 1, 16, 16)
    output = pipe.classify(images)
    assert set(output.labels.tolist()) <= {0, 1}
    assert float(output.probabilities[:, 2:].abs().sum()) == 0.0
    assert output.label_names == [pipe.class_names[label] for label in output.labels.tolist()]
    # `classes=` still overrides, by index or by name, unseen classes included.
    override = pipe.classify(images, classes=["two", 3])
    assert set(override.labels.tolist()) <= {2, 3} and set(override.label_names) <= {"two", "three"}


def test_class_labels_by_name_and_unseen_or_unknown_classes_refused():
    pipe = classes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 1, "output_type": "pt", "generator": torch.manual_seed(0)}
    by_name = pipe(class_labels=["one", "zero"], **kwargs).images
    by_index = pipe(class_labels=[1, 0], **{**kwargs, "generator": torch.manual_seed(0)}).images
    assert by_name.shape == (2, 1, 16, 16) and torch.equal(by_name, by_index)
    with pytest.raises(ValueError, match=r"not seen \(it was trained on \['one', 'zero'\]\)"):
        pipe(class_labels="two", **kwargs)
    with pytest.raises(ValueError, match="Unknown class 'seven'"):
        pipe(class_labels=["seven"], **kwargs)
    with pytest.raises(ValueError, match="class indices or names"):
        pipe(class_labels=[1.5], **kwargs)
    with pytest.raises(ValueError, match="Unknown classes"):
        pipe(class_labels=[7], **kwargs)
    with pytest.raises(ValueError, match="one name per class"):
        JDCLPipeline(unet=pipe.unet, scheduler=pipe.scheduler, class_names=["a", "b"])


def test_a_checkpoint_without_a_class_record_loads_with_every_class_seen(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    for key in ("class_names", "class_order", "seen_classes", "task_index", "num_tasks"):
        index.pop(key, None)
    (tmp_path / "model_index.json").write_text(json.dumps(index))  # as jdcl wrote them before the record
    pipe = JDCLPipeline.from_pretrained(tmp_path)
    assert pipe.seen_classes == [0, 1, 2, 3] and pipe.class_names == ["0", "1", "2", "3"]
    output = pipe.classify(torch.rand(3, 1, 16, 16))
    assert output.probabilities.shape == (3, 4) and output.label_names == [str(c) for c in output.labels.tolist()]
