"""The configuration of a continual JDCL run: one dataclass, loadable from YAML/JSON presets and command-line flags."""

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_schema import (
    CHOICES,
    FLOAT_RANGES,
    INTEGER_RANGES,
    OPTIONAL_NUMBERS,
    RUN_IDENTITY_EXCLUDED,
    normalize_legacy_keys,
)
from .options import UnknownKeysError, check_choice, check_number
from .validation import (
    check_run_settings,
    check_starting_point,
    check_unet_config,
    check_unet_config_types,
    load_yaml,
)


# The presets shipped with the package: `--config NAME` loads `PRESETS_DIR / "NAME.yaml"`.
PRESETS_DIR = Path(__file__).parent / "presets"

# The bundled demo's UNet: 8x8 inputs, three resolutions, attention at 4x4, 2x2 and in the mid block.
DEFAULT_UNET_CONFIG = {
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 32,
    "norm_num_groups": 16,
    "dropout": 0.0,
    "classifier_hidden_dim": 256,
    "classifier_dropout": 0.1,
}


@dataclass(init=False, eq=False)
class JDCLTrainingConfig:
    r"""
    Everything a continual JDCL run needs. The defaults are the bundled demo (scikit-learn digits at their own 8x8, five
    tasks of two classes, a 1.3M-parameter UNet) with the paper's losses; `jdcl/presets/` holds the paper's presets.

    Args:
        output_dir (`str`): Where task pipelines, metrics, pictures, logs and checkpoints go.
        dataset_name (`str`, *optional*): A Hub dataset name, a local dataset folder, or `"digits"`; the bundled
            digits when neither this nor `train_data_dir` is given.
        dataset_config_name (`str`, *optional*): The dataset's configuration name.
        train_data_dir (`str`, *optional*): An image folder (`imagefolder` layout: one subfolder per class).
        image_column (`str`, *optional*): The image column; found automatically when `None`.
        label_column (`str`, *optional*): The label column; found automatically when `None`.
        test_split (`str`, *optional*): The evaluation split; "test", else "validation", else carved from train.
        cache_dir (`str`, *optional*): The `datasets` cache folder.
        skip_bad_images (`bool`): With `train_data_dir`, leave out images that do not decode (counted and named in a
            warning) instead of refusing the folder.
        resolution (`int`): Images are resized to `resolution x resolution`.
        num_tasks (`int`): Number of class-incremental tasks.
        class_order (`list`, *optional*): The order in which classes arrive (indices or names); label order if `None`.
        unet_config (`dict`): `JointUNet2DModel` arguments (channels, blocks, classifier head); `sample_size`,
            `in_channels`, `out_channels` and `num_classes` come from the data.
        pretrained_model_name_or_path (`str`, *optional*): A JDCL pipeline (a folder or a Hub id). A `task-K`
            checkpoint of a run is continued: this run's tasks are K+1 onwards, learning the classes it has not seen
            (`--class_order`, default: the rest of its run's order; `--num_tasks` counts the new tasks), with the
            checkpoint as the previous model. A pipeline saved by hand starts the first task instead.
        pretrained_revision (`str`, *optional*): The Hub revision of `pretrained_model_name_or_path`, e.g. "task-3".
        class_names_map (`dict`, *optional*): When continuing a checkpoint, the checkpoint's name of each data-set class
            whose name differs, e.g. `{"airplane": "plane"}`.
        pretrained_unet (`str`, *optional*): A diffusers `UNet2DModel` (a folder or a Hub id, e.g. a DDPM) to start the
            first task from, with a new classifier head; its configuration replaces `unet_config`'s UNet settings.
        pretrained_unet_subfolder (`str`, *optional*): The UNet's subfolder in `pretrained_unet` (a pipeline: "unet").
        num_train_timesteps (`int`): Diffusion steps of the noise schedule.
        beta_start (`float`): First beta of the linear schedule (the paper: 1e-3).
        beta_end (`float`): Last beta of the linear schedule.
        train_batch_size (`int`): Batch size per process.
        learning_rate (`float`): AdamW learning rate, constant (no schedule, as in the paper).
        adam_beta1 (`float`): AdamW's first-moment decay.
        adam_beta2 (`float`): AdamW's second-moment decay.
        adam_weight_decay (`float`): AdamW's decoupled weight decay.
        adam_epsilon (`float`): AdamW's epsilon.
        max_grad_norm (`float`): Gradient clipping norm; 0 disables clipping.
        mixed_precision (`str`): "no", "fp16" or "bf16" (passed to accelerate).
        gradient_checkpointing (`bool`): Trade compute for memory in the UNet.
        adam_fused (`bool`): AdamW's update as fused kernels (`fused=True`) instead of one kernel per operation over
            all tensors (`foreach=True`). Same arithmetic, rounded differently.
        channels_last (`bool`): Models and batches in the channels-last memory format, which tensor-core GPUs
            convolve faster; saved weights are in the usual format.
        compile (`bool`): `torch.compile` (inductor, through accelerate's dynamo plugin) the training step of every
            stage, its teachers and the rehearsal sampler's UNet. Each graph compiles on first use (minutes; inductor
            caches it for later runs). `accelerate launch --dynamo_backend` does the same with its own backend.
        first_task_train_steps (`int`, *optional*): Steps of the first task; `local_train_steps + global_train_steps`
            when `None`, so that the first task trains as long as every later one. Its generator makes the old-class
            rehearsal of every later task, which is why it is not cut to one stage's length.
        local_train_steps (`int`): Steps of each local stage (learning a new task's real data).
        global_train_steps (`int`): Steps of each global stage (distillation on generated data).
        diffusion_loss_weight (`float`): Weight of the noise MSE in local stages.
        classification_loss_weight (`float`): Weight of the cross-entropy on the clean view in local stages.
        global_diffusion_loss_weight (`float`): Weight of the noise MSE in the global stage.
        global_classification_loss_weight (`float`): Weight of the cross-entropy on generated labels in the global
            stage.
        distillation_diffusion_weight (`float`): Weight of the noise distillation, times `2 * n_group / N`.
        distillation_classification_weight (`float`): Weight of the logit distillation, times `2 * n_group / N`.
        classification_warmup_steps (`int`): The global stage's CE and classifier-distillation terms start after
            this many steps (the reference runs: 10k).
        use_ema (`bool`): Keep an EMA of the weights; teachers, rehearsal, evaluation and saved pipelines use it.
        ema_decay (`float`): EMA decay (the paper: 0.9999).
        ema_warmup (`bool`): Ramp the decay up as `1 - (1 + step) ** -ema_power` (for short runs).
        ema_power (`float`): Exponent of the EMA warm-up.
        augment (`bool`): Use the paper's two augmented views; plain images for both when `False`.
        horizontal_flip (`bool`): Whether augmented views (and FixMatch's views, semi-supervised) flip images at
            random: the CIFAR presets do, as the authors; off by default, since a flipped digit is another glyph.
        strategy (`str`): The method: the name of a registered [`ContinualStrategy`] (see `--help`), "jdcl" by
            default.
        local_init (`str`): "global" (the paper's text: the local model starts from the previous global model) or
            "scratch" (the authors' CIFAR scripts).
        labeled_fraction (`float`, *optional*): Semi-supervised: the share of each class's training examples that
            keep their labels, in (0, 1] (seeded, class-balanced, at least one per class); every label when `None`.
        labeled_per_class (`int`, *optional*): Semi-supervised: how many examples of each class keep their labels.
        unlabeled_batch_ratio (`int`): Semi-supervised: the unlabelled batch of a local stage is this many times the
            labelled one (FixMatch's mu; the authors: 7).
        pseudo_label_threshold (`float`): Semi-supervised: an unlabelled image is pseudo-labelled when the
            classifier's top probability on its weak view reaches this (FixMatch: 0.95).
        replay_samples_per_class (`int`): Rehearsal quota per class.
        replay_inference_steps (`int`): Sampling steps per rehearsal sample (of `replay_scheduler`).
        replay_batch_size (`int`): Rehearsal samples generated at once, per process.
        replay_sampler (`str`): "label" (unguided, labelled by the model's classifier: the paper) or "guided".
        replay_guidance_scale (`float`): Guidance strength of the "guided" sampler.
        replay_max_sampling_factor (`float`): Stop sampling after this many times the quota; then fill.
        replay_selection (`str`): "first" (keep samples as they come until each quota is met: the paper) or
            "confident" (draw the whole `replay_max_sampling_factor` budget, keep each class's most confident).
        replay_eta (`float`): DDIM eta of rehearsal sampling: 0 is deterministic DDIM (the paper), 1 adds DDPM-like
            noise at every step. Schedulers without eta ignore it.
        replay_scheduler (`str`): The diffusers scheduler that samples rehearsal, quality samples and grids, and that
            the saved pipelines carry: "ddim" (the paper), "dpmsolver++", "unipc", "euler", ... (see
            `jdcl.schedulers.REPLAY_SCHEDULERS`) or a scheduler class name such as "DPMSolverSinglestepScheduler".
        eval_batch_size (`int`): Batch size of evaluation.
        grid_samples_per_class (`int`): Images per class in each task's sample grid.
        grid_inference_steps (`int`): DDIM steps of the sample grid.
        quality_metrics (`list[str]`, *optional*): Feature extractors of the generation-quality metrics measured after
            every task ("referee", "dinov2", "inception"); none when `None`. See `jdcl.quality`.
        quality_samples_per_class (`int`): Fresh samples per seen class that the quality metrics measure.
        quality_dinov2_model (`str`): The DINOv2 model of the "dinov2" extractor: a Hub id or a local folder.
        quality_referee_steps (`int`): Training steps of the "referee" extractor's classifier.
        seed (`int`): Seed of everything.
        checkpointing_steps (`int`): Save an accelerate checkpoint every this many steps of a stage.
        checkpoints_total_limit (`int`): Keep at most this many checkpoints per stage.
        resume_from_checkpoint (`str`, *optional*): "latest" (or a checkpoint path) continues a killed run.
        logger (`str`): The tracker: "tensorboard", "wandb", "all" or "none" (`--report_to` is the same flag).
        push_to_hub (`bool`): Push every task to the Hub (branch `task-K` and `main`).
        hub_model_id (`str`, *optional*): The Hub repo; `<output_dir name>` when `None`.
        hub_token (`str`, *optional*): A Hub token; prefer `huggingface-cli login`. Never logged nor written.
        hub_private_repo (`bool`, *optional*): Create the repo private.
        show_progress (`bool`): Show tqdm bars.
    """

    output_dir: str = "jdcl-digits"
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    test_split: str | None = None
    cache_dir: str | None = None
    skip_bad_images: bool = False
    resolution: int = 8
    num_tasks: int = 5
    class_order: list | None = None
    unet_config: dict = field(default_factory=lambda: dict(DEFAULT_UNET_CONFIG))
    pretrained_model_name_or_path: str | None = None
    pretrained_revision: str | None = None
    class_names_map: dict | None = None
    pretrained_unet: str | None = None
    pretrained_unet_subfolder: str | None = None
    num_train_timesteps: int = 1000
    beta_start: float = 1e-3
    beta_end: float = 0.02
    train_batch_size: int = 32
    learning_rate: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    adam_fused: bool = False
    channels_last: bool = False
    compile: bool = False
    first_task_train_steps: int | None = None
    local_train_steps: int = 300
    global_train_steps: int = 300
    diffusion_loss_weight: float = 1.0
    classification_loss_weight: float = 1e-2
    global_diffusion_loss_weight: float = 0.01
    global_classification_loss_weight: float = 1e-4
    distillation_diffusion_weight: float = 1.0
    distillation_classification_weight: float = 1e-2
    classification_warmup_steps: int = 0
    use_ema: bool = True
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    ema_power: float = 2 / 3
    augment: bool = False
    horizontal_flip: bool = False
    strategy: str = "jdcl"
    local_init: str = "global"
    labeled_fraction: float | None = None
    labeled_per_class: int | None = None
    unlabeled_batch_ratio: int = 7
    pseudo_label_threshold: float = 0.95
    replay_samples_per_class: int = 100
    replay_inference_steps: int = 20
    replay_batch_size: int = 256
    replay_sampler: str = "label"
    replay_guidance_scale: float = 3.0
    replay_max_sampling_factor: float = 2.0
    replay_selection: str = "first"
    replay_eta: float = 0.0
    replay_scheduler: str = "ddim"
    eval_batch_size: int = 512
    grid_samples_per_class: int = 8
    grid_inference_steps: int = 20
    quality_metrics: list | None = None
    quality_samples_per_class: int = 100
    quality_dinov2_model: str = "facebook/dinov2-base"
    quality_referee_steps: int = 1000
    seed: int = 0
    checkpointing_steps: int = 200
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = None
    logger: str = "tensorboard"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = field(default=None, repr=False)
    hub_private_repo: bool | None = None
    show_progress: bool = True

    def __init__(self, **values: Any):
        r"""
        Args:
            values: The fields above, and the options of the chosen `strategy` (declared in its file, e.g.
                `buffer_size`), read as `config.<option>`. An option of another method is refused unless at its
                default (records of runs hold every method's options of their time).
        """
        for config_field in dataclasses.fields(self):
            if config_field.name in values:
                value = values.pop(config_field.name)
            elif config_field.default_factory is not dataclasses.MISSING:
                value = config_field.default_factory()
            else:
                value = config_field.default
            setattr(self, config_field.name, value)
        from .strategies.base import strategy_option_values

        self.strategy_options = strategy_option_values(self.strategy, values)
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: the chosen method's options.
        options = self.__dict__.get("strategy_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no field nor `--strategy {self.strategy}` option {name!r}.")

    def __setattr__(self, name: str, value: Any) -> None:
        options = self.__dict__.get("strategy_options")
        if options is not None and name in options:
            options[name] = value
        else:
            super().__setattr__(name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JDCLTrainingConfig):
            return NotImplemented
        return self.to_dict(include_secrets=True) == other.to_dict(include_secrets=True)

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr]
        shown += [f"{name}={value!r}" for name, value in self.strategy_options.items()]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __post_init__(self):
        # A partial `unet_config` changes the default UNet; it does not replace it.
        check_unet_config_types(self.unet_config)
        self.unet_config = {**DEFAULT_UNET_CONFIG, **(self.unet_config or {})}
        self.validate()

    def validate(self) -> None:
        """Checks every value that can be checked before any data is loaded; raises `ValueError` naming the flag."""
        from .quality.task_quality import check_quality_metrics
        from .schedulers import sampling_scheduler_from_config
        from .strategies import STRATEGIES

        for name, allowed in {"strategy": sorted(STRATEGIES), **CHOICES}.items():
            check_choice(name, getattr(self, name), allowed)
        for name, (low, high) in INTEGER_RANGES.items():
            check_number(name, getattr(self, name), low, high, integer=True, optional=name in OPTIONAL_NUMBERS)
        for name, (low, high, low_inclusive) in FLOAT_RANGES.items():
            optional = name in OPTIONAL_NUMBERS
            check_number(name, getattr(self, name), low, high, False, low_inclusive=low_inclusive, optional=optional)
        for name, option in STRATEGIES[self.strategy].all_options().items():
            option.check(self.strategy_options[name])
        if not self.beta_start < self.beta_end:
            raise ValueError(
                f"`--beta_start` ({self.beta_start}) must be below `--beta_end` ({self.beta_end}): the noise grows."
            )
        if self.labeled_fraction is not None and self.labeled_per_class is not None:
            raise ValueError("Pass either `--labeled_fraction` or `--labeled_per_class`, not both.")
        STRATEGIES[self.strategy].check_config(self)
        check_quality_metrics(self.quality_metrics)
        sampling_scheduler_from_config(self)
        check_run_settings(self)
        check_starting_point(self)
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("Pass either `--dataset_name` or `--train_data_dir`, not both.")
        if self.skip_bad_images and self.train_data_dir is None:
            raise ValueError(
                "`--skip_bad_images` leaves out the unreadable images of an image folder, and no `--train_data_dir` is "
                "given: pass the folder with `--train_data_dir`, or drop `--skip_bad_images`."
            )
        if self.push_to_hub and self.hub_token is not None and self.logger in ("wandb", "all"):
            raise ValueError(
                "Passing `--hub_token` while reporting to wandb would expose it; use `huggingface-cli login` instead."
            )
        check_unet_config(self.unet_config, self.resolution)

    @property
    def semi_supervised(self) -> bool:
        """Whether some training examples are unlabelled (`--labeled_fraction 1.0` is the supervised run)."""
        return self.labeled_per_class is not None or (self.labeled_fraction is not None and self.labeled_fraction < 1)

    @property
    def total_first_task_steps(self) -> int:
        if self.first_task_train_steps is None:
            return self.local_train_steps + self.global_train_steps
        return self.first_task_train_steps

    @classmethod
    def field_names(cls, include_options: bool = True) -> list[str]:
        r"""
        Every key a configuration accepts.

        Args:
            include_options (`bool`, *optional*, defaults to `True`): Whether to add every registered method's options
                to the fields.
        """
        names = [config_field.name for config_field in dataclasses.fields(cls)]
        if include_options:
            from .strategies.base import registered_options

            names += sorted(registered_options())
        return names

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "the configuration") -> "JDCLTrainingConfig":
        r"""
        Builds a configuration from values in today's keys or in earlier versions' (see `normalize_legacy_keys`),
        refusing keys that do not exist.

        Args:
            values (`Mapping[str, Any]`): Field values.
            source (`str`, *optional*, defaults to `"the configuration"`): Where the values come from, for errors.
        """
        try:
            return cls(**normalize_legacy_keys(values))
        except UnknownKeysError as error:
            raise UnknownKeysError(f"{source}: {error}") from None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "JDCLTrainingConfig":
        r"""
        Loads a YAML or JSON preset; `overrides` win over the file.

        Args:
            path (`str` or `Path`): The preset file, or the name of a preset shipped with jdcl (`"cifar10"`: see
                `jdcl/presets/`, which `examples/configs/` links to).
            overrides: Field values that replace the file's.
        """
        path = Path(path)
        shipped = PRESETS_DIR / f"{path}.yaml"
        if not path.is_file() and path.suffix == "" and shipped.is_file():
            path = shipped
        if not path.is_file():
            names = ", ".join(sorted(preset.stem for preset in PRESETS_DIR.glob("*.yaml")))
            raise ValueError(f"Config file {path} does not exist; pass a YAML/JSON file or a shipped preset: {names}.")
        try:
            values = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"Config file {path} is not valid YAML or JSON: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"Config file {path} must hold a mapping of keys to values.")
        if "hub_token" in values:
            raise ValueError(
                f"Config file {path} holds a `hub_token`: a token does not belong in a file. Remove it and log in with "
                "`huggingface-cli login` or set HF_TOKEN."
            )
        return cls.from_dict({**values, **overrides}, source=str(path))

    def to_dict(self, include_secrets: bool = False) -> dict[str, Any]:
        r"""
        The configuration as plain values.

        Args:
            include_secrets (`bool`, *optional*, defaults to `False`): Whether to keep `hub_token` (never written).
        """
        values = {**dataclasses.asdict(self), **self.strategy_options}
        if not include_secrets:
            values.pop("hub_token")
        return values

    def run_identity(self) -> dict[str, Any]:
        """The values that define the experiment: an output folder holds the run of one identity only."""
        identity = {k: v for k, v in json.loads(json.dumps(self.to_dict())).items() if k not in RUN_IDENTITY_EXCLUDED}
        # Resolved: what `None` stands for has changed before, and an identity must say what the run trains.
        identity["first_task_train_steps"] = self.total_first_task_steps
        return identity
