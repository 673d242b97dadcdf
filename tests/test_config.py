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
    with pytest.raises(ValueError, match=r"bad.yaml: Unknown configuration keys \['local_steps'\]"):
        JDCLTrainingConfig.from_file(preset)
    with pytest.raises(ValueError, match="Unknown configuration keys"):
        JDCLTrainingConfig.from_dict({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match=r"Unknown configuration keys \['learning_rat'\]"):
        JDCLTrainingConfig(learning_rat=1e-3)
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
        ({"strategy": "finetune", "no_distillation": True}, "`--no_distillation` is an option of `--strategy jdcl"),
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


def _required_options(strategy) -> dict:
    # The smallest valid value of each option a method requires (an unset option whose method refuses it unset).
    required = {}
    for name, option in strategy.all_options().items():
        if option.default is None:
            required[name] = 100 if option.type is int else option.low if option.low is not None else "x"
    return required


def test_every_registered_strategy_is_a_choice_with_its_options():
    from jdcl.strategies import STRATEGIES

    # The methods of the package are found by importing its files: none is listed here.
    assert {"jdcl", "finetune", "replay_buffer"} <= set(STRATEGIES)
    for name, strategy in STRATEGIES.items():
        config = JDCLTrainingConfig(strategy=name, **_required_options(strategy))
        assert config.strategy == name
        # Its options and no other method's are attributes, keys of its dict and part of its identity.
        assert set(config.strategy_options) == set(strategy.all_options())
        for option_name in strategy.all_options():
            assert getattr(config, option_name) == config.run_identity()[option_name]
            assert option_name in JDCLTrainingConfig.field_names()
        others = set(JDCLTrainingConfig.field_names()) - set(JDCLTrainingConfig.field_names(include_options=False))
        assert not (others - set(strategy.all_options())) & set(config.to_dict())


# ------------------------------------------------------------------------------------- a method's own options


@pytest.fixture
def toy_strategy():
    """A method declared the way a new file declares one, with one option; unregistered afterwards."""
    from jdcl.options import StrategyOption
    from jdcl.strategies import STRATEGIES, ContinualStrategy, register_strategy

    @register_strategy
    class ToyStrategy(ContinualStrategy):
        name = "toy"
        options = (StrategyOption("toy_weight", float, 0.5, "How much the toy term weighs.", low=0.0, high=1.0),)

    yield ToyStrategy
    STRATEGIES.pop("toy")


def test_a_new_method_s_option_is_a_flag_a_key_an_attribute_and_part_of_the_identity(toy_strategy, tmp_path):
    from jdcl.cli import build_parser, parse_config

    config = parse_config(["--strategy", "toy", "--toy_weight", "0.25"])
    assert config.toy_weight == 0.25 and config.run_identity()["toy_weight"] == 0.25
    preset = tmp_path / "toy.yaml"
    preset.write_text("strategy: toy\ntoy_weight: 0.75\n")
    assert JDCLTrainingConfig.from_file(preset).toy_weight == 0.75
    assert JDCLTrainingConfig(strategy="toy").toy_weight == 0.5
    assert "How much the toy term weighs." in build_parser().format_help()
    # Two runs that differ in the option are two experiments.
    assert JDCLTrainingConfig(strategy="toy").run_identity() != config.run_identity()
    # Its range is checked, naming the flag.
    with pytest.raises(ValueError, match=r"`--toy_weight` must be >= 0.0 and <= 1.0, got 2.0"):
        JDCLTrainingConfig(strategy="toy", toy_weight=2.0)
    # Other methods do not have it, and refuse it when it would change anything.
    assert "toy_weight" not in JDCLTrainingConfig().to_dict()
    with pytest.raises(ValueError, match="`--toy_weight` is an option of `--strategy toy`"):
        JDCLTrainingConfig(toy_weight=0.25)
    assert JDCLTrainingConfig(toy_weight=0.5) == JDCLTrainingConfig()


def test_an_option_declared_twice_differently_or_shadowing_a_field_is_refused(toy_strategy):
    from jdcl.options import StrategyOption
    from jdcl.strategies import ContinualStrategy, register_strategy

    class Clash(ContinualStrategy):
        name = "clash"
        options = (StrategyOption("toy_weight", float, 0.1, "Another toy weight."),)

    with pytest.raises(ValueError, match="declared differently"):
        register_strategy(Clash)
    Clash.options = (StrategyOption("seed", int, 0, "A second seed."),)
    with pytest.raises(ValueError, match="is a field of the configuration"):
        register_strategy(Clash)
    with pytest.raises(ValueError, match="type must be int, float, str or bool"):
        StrategyOption("toy_list", list, None, "A list.")


def test_records_of_runs_from_before_the_options_moved_compare_equal():
    from jdcl.config_schema import add_missing_defaults

    # A recorded identity held every method's options of its time, and lacked the options added since.
    for strategy, options in [("jdcl", {}), ("finetune", {}), ("replay_buffer", {"buffer_size": 20})]:
        today = JDCLTrainingConfig(strategy=strategy, **options).run_identity()
        recorded = {k: v for k, v in today.items() if k not in ("no_distillation", "buffer_size", "buffer_policy")}
        recorded.update({"no_distillation": False, "buffer_size": None, "buffer_policy": "class_balanced", **options})
        assert add_missing_defaults(recorded) == today
        assert JDCLTrainingConfig.from_dict(add_missing_defaults(recorded)).run_identity() == today
    # An option of another method at another value than its default is not the same run.
    recorded = {**JDCLTrainingConfig().run_identity(), "buffer_size": 20}
    assert add_missing_defaults(recorded) != JDCLTrainingConfig().run_identity()


def test_records_of_augmented_runs_from_before_horizontal_flip_flipped():
    from jdcl.config_schema import add_missing_defaults

    # Before `horizontal_flip` was a field, `augment: true` always flipped, and records lack the field.
    for augment in (True, False):
        today = JDCLTrainingConfig(augment=augment, horizontal_flip=augment).run_identity()
        recorded = {k: v for k, v in today.items() if k != "horizontal_flip"}
        assert add_missing_defaults(recorded) == today
        assert add_missing_defaults(recorded) != {**today, "horizontal_flip": not augment}


def test_recorded_benchmark_results_still_load():
    import importlib.util
    import json

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("continual_benchmark", root / "continual.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    path = root / "results" / "continual_mnist10k.json"
    budget = benchmark.make_budget({}, quick=False)
    assert benchmark.budget_differences(json.loads(path.read_text())["budget"], budget) == []
    # Its rows were recorded with every method's options of their time, and none of those added since.
    assert {"jdcl", "finetune", "separate"} <= set(benchmark.load_results(path, budget, quick=False)["rows"])


def test_a_broken_entry_point_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    import importlib.metadata

    import jdcl.strategies

    (tmp_path / "broken_methods.py").write_text("raise RuntimeError('needs a package that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = jdcl.strategies.ENTRY_POINT_GROUP
    entry_points = [
        importlib.metadata.EntryPoint("broken", "broken_methods", group),
        importlib.metadata.EntryPoint("missing", "no_such_package_of_methods", group),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entry_points)
    with caplog.at_level("WARNING", logger="jdcl.strategies"):
        jdcl.strategies.load_entry_points()
    assert "'broken' (broken_methods) was not loaded: RuntimeError: needs a package" in caplog.text
    assert "'missing' (no_such_package_of_methods) was not loaded: ModuleNotFoundError" in caplog.text
    assert JDCLTrainingConfig(strategy="finetune").strategy == "finetune"
