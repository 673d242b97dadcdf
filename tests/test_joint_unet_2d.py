import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from jdcl import JointUNet2DModel

from .utils import TINY_UNET_CONFIG, tiny_unet


UNET_ONLY_CONFIG = {k: v for k, v in TINY_UNET_CONFIG.items() if not k.startswith(("num_classes", "classifier"))}


def unet_twin(model: JointUNet2DModel) -> UNet2DModel:
    unet = UNet2DModel(**UNET_ONLY_CONFIG).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    unet.load_state_dict(state, strict=True)
    return unet


def test_init_lists_every_unet2d_argument():
    unet_args = set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}
    joint_args = set(inspect.signature(JointUNet2DModel.__init__).parameters) - {"self"}
    assert unet_args <= joint_args
    assert joint_args - unet_args == {"num_classes", "classifier_hidden_dim", "classifier_dropout"}


@pytest.mark.parametrize("timestep", [0, 17, torch.tensor(999), torch.tensor([1, 250, 500, 999])])
def test_forward_is_bit_identical_to_unet2d(timestep):
    model = tiny_unet()
    unet = unet_twin(model)
    sample = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(sample, timestep).sample, unet(sample, timestep).sample)
        assert torch.equal(model(sample, timestep, return_dict=False)[0], unet(sample, timestep).sample)


def test_forward_bit_identical_for_fourier_time_and_centred_input():
    config = dict(UNET_ONLY_CONFIG, time_embedding_type="fourier", center_input_sample=True)
    torch.manual_seed(0)
    model = JointUNet2DModel(**config, num_classes=3).eval()
    unet = UNet2DModel(**config).eval()
    unet.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")})
    sample = torch.rand(2, 1, 16, 16)
    timesteps = torch.tensor([0.5, 20.0])
    with torch.no_grad():
        assert torch.equal(model(sample, timesteps).sample, unet(sample, timesteps).sample)


# diffusers' skip blocks fix some group counts at 32, hence wider channels than the tiny config's.
SKIP_BLOCKS_CONFIG = {
    "sample_size": 16,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
    "up_block_types": ("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
    "attention_head_dim": 8,
}


def test_skip_blocks_forward_is_bit_identical_and_the_classifier_trains_every_encoder_parameter():
    torch.manual_seed(0)
    model = JointUNet2DModel(**SKIP_BLOCKS_CONFIG, num_classes=3, classifier_hidden_dim=16)
    unet = UNet2DModel(**SKIP_BLOCKS_CONFIG).eval()
    unet.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")})
    sample = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.eval()(sample, 30).sample, unet(sample, 30).sample)

    # A classifier-only stage freezes the decoder; every other parameter, the skip convs included, must then get a
    # gradient, or DDP would find unused parameters.
    for module in model.decoder_modules():
        module.requires_grad_(False)
    model.train().classify(sample).logsumexp(dim=1).sum().backward()
    trainable = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert any("skip_conv" in name for name in trainable)
    assert [name for name, parameter in trainable.items() if parameter.grad is None] == []
    assert all(not name.startswith("up_blocks.") for name in trainable)


def test_paper_cifar_config_matches_reference_parameter_count():
    model = JointUNet2DModel(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=64,
        resnet_time_scale_shift="scale_shift",
        dropout=0.1,
        attn_norm_num_groups=32,
        num_classes=10,
    )
    unet_parameters = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier."))
    assert unet_parameters == 52_542_979
    assert model.pooled_feature_dim == 3712
    assert model.classifier.linear_1.in_features == 3712
    assert model.classifier.linear_1.out_features == 1024
    assert model.classifier.linear_2.out_features == 10


def test_pooled_features_are_every_encoder_map():
    model = tiny_unet()
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    encoder_output = model.encode(images, torch.zeros(3, dtype=torch.long))
    # conv_in + per down block: layers_per_block resnets + a downsampler (not on the last block) + the mid block.
    assert len(encoder_output.down_block_res_samples) == 1 + 2 + 2 + 1
    features = model.pool_features(encoder_output)
    assert features.shape == (3, model.pooled_feature_dim) == (3, 16 + 2 * 16 + 2 * 32 + 32 + 32)
    expected_first = encoder_output.down_block_res_samples[0].mean(dim=(2, 3))
    assert torch.allclose(features[:, :16], expected_first)
    assert torch.allclose(features[:, -32:], encoder_output.hidden_states.mean(dim=(2, 3)))


def test_classify_reads_clean_images_at_t0_without_decoder():
    model = tiny_unet()
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    calls = []
    hooks = [block.register_forward_hook(lambda *_: calls.append(1)) for block in model.up_blocks]
    logits = model.classify(images)
    assert logits.shape == (5, 4)
    assert not calls, "classify must not run the decoder"
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        manual = model.classifier(model.pool_features(model.encode(images, 0)))
    assert torch.allclose(logits, manual)


def test_joint_forward_matches_separate_calls():
    model = tiny_unet()
    noisy = torch.randn(4, 1, 16, 16)
    clean = torch.rand(4, 1, 16, 16) * 2 - 1
    timesteps = torch.tensor([3, 300, 600, 900])
    with torch.no_grad():
        output = model.joint_forward(noisy, timesteps, clean)
        assert torch.allclose(output.sample, model(noisy, timesteps).sample, atol=1e-5)
        assert torch.allclose(output.logits, model.classify(clean), atol=1e-5)
        # A clean batch of another size (e.g. a subset) is allowed.
        assert model.joint_forward(noisy, 7, clean[:2]).logits.shape == (2, 4)


def test_joint_forward_backward_and_gradient_checkpointing_agree():
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    noise = torch.randn(2, 1, 16, 16)
    timesteps = torch.tensor([10, 500])
    labels = torch.tensor([1, 3])

    def loss_and_grads(checkpointing: bool):
        model = tiny_unet().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        output = model.joint_forward(noise, timesteps, images)
        loss = F.mse_loss(output.sample, noise) + F.cross_entropy(output.logits, labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    loss_plain, grads_plain = loss_and_grads(False)
    torch.manual_seed(0)
    loss_ckpt, grads_ckpt = loss_and_grads(True)
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    assert "classifier.linear_1.weight" in grads_plain and "conv_in.weight" in grads_plain
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-5), name


def test_bf16_autocast():
    model = tiny_unet()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model.joint_forward(torch.randn(2, 1, 16, 16), torch.tensor([5, 50]), torch.rand(2, 1, 16, 16))
    assert output.logits.dtype == torch.bfloat16
    assert torch.isfinite(output.sample).all() and torch.isfinite(output.logits).all()


def test_torch_compile_matches_eager():
    model = tiny_unet()
    compiled = torch.compile(model.classify, backend="eager", fullgraph=False)
    images = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(compiled(images), model.classify(images), atol=1e-6)


def test_save_load_round_trip_without_warnings(tmp_path, caplog):
    model = tiny_unet(num_classes=7, classifier_hidden_dim=24, classifier_dropout=0.2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = JointUNet2DModel.from_pretrained(tmp_path).eval()
    assert "not used" not in caplog.text and "newly initialized" not in caplog.text
    assert reloaded.config.num_classes == 7
    assert reloaded.config.classifier_hidden_dim == 24
    assert reloaded.config.classifier_dropout == 0.2
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"classifier_hidden_dim": 0}, "classifier_hidden_dim"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JointUNet2DModel(**{**TINY_UNET_CONFIG, **kwargs})


def test_bad_input_raises_clear_errors():
    model = tiny_unet()
    with pytest.raises(ValueError, match="3 channels but the model expects 1"):
        model.classify(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="resize the images to 16x16"):
        model.classify(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(2, 1, 18, 18), 3)
    with pytest.raises(ValueError, match="4D tensor"):
        model.classify(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="same channels and size"):
        model.joint_forward(torch.rand(2, 1, 32, 32), 3, torch.rand(2, 1, 16, 16))


def test_attention_runs_through_pytorch_fused_attention():
    # Every attention block of the joint model goes through `F.scaled_dot_product_attention` (flash or
    # memory-efficient kernels on a GPU), diffusers' default, not a hand-written softmax(QK^T)V.
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    processors = [module.processor for module in tiny_unet().modules() if isinstance(module, Attention)]
    assert processors and all(isinstance(processor, AttnProcessor2_0) for processor in processors)
