from pathlib import Path

import pytest
import torch

from jdcl import JointUNet2DModel
from jdcl.config import JDCLTrainingConfig


PRESETS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))


def test_presets_exist():
    names = {path.stem for path in PRESETS}
    assert {"digits", "mnist", "cifar10", "cifar100_5t", "cifar100_10t", "imagenet100"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_every_preset_loads_and_builds_its_unet(path):
    config = JDCLTrainingConfig.from_file(path)
    with torch.device("meta"):
        model = JointUNet2DModel(
            sample_size=config.resolution, in_channels=3, out_channels=3, num_classes=10, **config.unet_config
        )
    assert model.config.sample_size == config.resolution


def test_digits_preset_is_the_defaults():
    preset = JDCLTrainingConfig.from_file(PRESETS[[p.stem for p in PRESETS].index("digits")])
    assert preset.to_dict() == JDCLTrainingConfig().to_dict()


def test_cifar10_preset_has_the_papers_settings():
    config = JDCLTrainingConfig.from_file(PRESETS[[p.stem for p in PRESETS].index("cifar10")])
    assert (config.local_train_steps, config.global_train_steps) == (50_000, 30_000)
    assert config.total_first_task_steps == 50_000
    assert config.learning_rate == 2e-4 and config.train_batch_size == 256
    assert config.classification_loss_weight == 1e-3 and config.global_classification_loss_weight == 1e-5
    assert config.ema_decay == 0.9999 and config.replay_samples_per_class == 1000
    assert config.replay_inference_steps == 250 and config.beta_start == 1e-3
    assert config.distillation_classification_weight == 1e-3
    # The authors' rehearsal: deterministic DDIM, samples kept in the order they come.
    assert config.replay_eta == 0.0 and config.replay_selection == "first"


def test_first_task_trains_as_long_as_a_later_task_unless_set():
    assert JDCLTrainingConfig(local_train_steps=30, global_train_steps=20).total_first_task_steps == 50
    explicit = JDCLTrainingConfig(local_train_steps=30, global_train_steps=20, first_task_train_steps=7)
    assert explicit.total_first_task_steps == 7
    # A run's identity holds the resolved length, so a folder or results file of another meaning of `None` is refused.
    resolved = JDCLTrainingConfig(local_train_steps=30, global_train_steps=20).run_identity()
    assert resolved["first_task_train_steps"] == 50


@pytest.mark.parametrize(
    ("values", "match"),
    [({"replay_selection": "best"}, "replay_selection"), ({"replay_eta": 1.5}, "replay_eta")],
)
def test_bad_rehearsal_settings_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        JDCLTrainingConfig(**values)


def test_unknown_keys_are_refused(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("num_tasks: 5\nlocal_steps: 10\n")
    with pytest.raises(ValueError, match=r"Unknown configuration keys \['local_steps'\]"):
        JDCLTrainingConfig.from_file(preset)
    with pytest.raises(ValueError, match="Unknown configuration keys"):
        JDCLTrainingConfig.from_dict({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="Unknown `--unet_config` keys"):
        JDCLTrainingConfig(unet_config={"channels": [1]})
    with pytest.raises(ValueError, match="does not exist"):
        JDCLTrainingConfig.from_file(tmp_path / "missing.yaml")


def test_overrides_win_over_the_file(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("num_tasks: 2\nseed: 4\n")
    config = JDCLTrainingConfig.from_file(preset, seed=9)
    assert (config.num_tasks, config.seed) == (2, 9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "replay"}, "strategy"),
        ({"local_init": "random"}, "local_init"),
        ({"num_tasks": 0}, "num_tasks"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"beta_start": 0.5, "beta_end": 0.1}, "beta_start"),
        ({"strategy": "finetune", "no_distillation": True}, "ablation of JDCL's distillation"),
        ({"strategy": "separate", "no_distillation": True}, "--strategy separate"),
        ({"dataset_name": "a", "train_data_dir": "b"}, "not both"),
    ],
)
def test_bad_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JDCLTrainingConfig(**kwargs)


def test_token_is_never_in_the_dict_or_repr():
    config = JDCLTrainingConfig(hub_token="hf_very_secret")
    assert "hf_very_secret" not in repr(config)
    assert "hf_very_secret" not in str(config.to_dict())
    assert "hf_very_secret" not in str(config.run_identity())


def test_the_ablation_flags_of_earlier_versions_name_their_strategies():
    assert JDCLTrainingConfig.from_dict({"single_stage": True}).strategy == "single_stage"
    assert JDCLTrainingConfig.from_dict({"joint_modelling": False}).strategy == "separate"
    assert JDCLTrainingConfig.from_dict({"single_stage": False, "joint_modelling": True}).strategy == "jdcl"
    with pytest.raises(ValueError, match="cannot be combined"):
        JDCLTrainingConfig.from_dict({"single_stage": True, "joint_modelling": False})
    with pytest.raises(ValueError, match="ablations of `strategy: jdcl`"):
        JDCLTrainingConfig.from_dict({"strategy": "finetune", "single_stage": True})


def test_every_registered_strategy_is_a_choice():
    from jdcl.strategies import STRATEGIES

    assert set(STRATEGIES) == {"jdcl", "finetune", "cumulative", "single_stage", "separate", "replay_buffer"}
    for name in STRATEGIES:
        buffer_size = 100 if STRATEGIES[name].stores_images else None
        assert JDCLTrainingConfig(strategy=name, buffer_size=buffer_size).strategy == name
