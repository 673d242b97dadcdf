"""Experience replay, the buffer-based baseline: real images of earlier classes are stored and replayed."""

import torch

from ..buffer import BUFFER_POLICIES, ReplayBuffer
from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import StageObjective
from ..options import StrategyOption
from ..stage import Stage
from ..tensor_data import TensorData
from .base import ContinualStrategy, Task, register_strategy


REPLAY = Stage("replay", 7)


@register_strategy
class ReplayBufferStrategy(ContinualStrategy):
    r"""
    One model trained with the joint loss on every batch half new real data and half images from a buffer of at most
    `--buffer_size` stored real images (`--buffer_policy` chooses which), for a whole task's budget. The generator is
    trained too, so its samples can be measured against JDCL's. With few labels the buffer keeps labelled images only
    (the stage is FixMatch-style on the new unlabelled ones). The buffer after each task is kept in the task's state
    folder, so a resumed run replays the same images.
    """

    name = "replay_buffer"
    learns_from_unlabeled = True
    card_description = (
        "Experience replay: every batch is half the new classes' real data and half real images of earlier classes "
        "from a buffer of stored images (`--buffer_size`)."
    )
    options = (
        StrategyOption(
            "buffer_size",
            int,
            None,
            "The most real images the buffer stores across tasks (at least one per class of the run).",
            low=1,
        ),
        StrategyOption(
            "buffer_policy",
            str,
            "class_balanced",
            'Which images the buffer keeps: "class_balanced" (an equal share per seen class) or "reservoir" '
            "(reservoir sampling over the stream of examples).",
            choices=BUFFER_POLICIES,
        ),
    )
    state_outside_checkpoint = "the real images its buffer stored"

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.buffer_size is None:
            raise ValueError(f"`--strategy {cls.name}` needs `--buffer_size M`, the most real images it stores.")

    @classmethod
    def check_classes(cls, config, num_classes: int) -> None:
        if config.buffer_size < num_classes:
            raise ValueError(
                f"`--buffer_size {config.buffer_size}` is smaller than the run's {num_classes} classes; the buffer "
                f"must hold at least one image of each. Pass --buffer_size {num_classes} or more."
            )

    def train_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        config = self.config
        new_data = self.train_data.subset(task.new_classes)
        # 1. The buffer as the previous task left it (empty before the second task).
        buffer = self.load_buffer(task.index - 1) if task.index > 0 else ReplayBuffer.empty(new_data.images.shape[1:])

        # 2. One stage: each batch half new data, half the buffer.
        model = self.stages.run(
            REPLAY,
            task.index,
            self.initial_model(previous),
            self.real_data(task.new_classes, buffer.as_data() if len(buffer) else None, buffer.fields),
            self.task_steps(task),
            self.replay_objective(),
            task.stage_seconds,
        )

        # 3. The new task's examples are offered to the buffer; what it keeps is replayed from the next task on.
        buffer = buffer.updated(
            new_data,
            config.buffer_size,
            config.buffer_policy,
            seed=config.seed * 1_000_003 + task.index,
            new_fields=self.buffer_fields(model, new_data),
        )
        self.save_buffer(task.index, buffer)
        task.rehearsal = buffer.summary()
        return model

    def replay_objective(self) -> StageObjective:
        """The loss of the replay stage: the joint loss (FixMatch-style where labels are few)."""
        return self.local_objective()

    def buffer_fields(self, model: JointUNet2DModel, new_data: TensorData) -> dict[str, torch.Tensor]:
        r"""
        The method's own values of the task's examples, stored with the images the buffer keeps (none here).

        Args:
            model ([`JointUNet2DModel`]): The model after the task.
            new_data ([`TensorData`]): The task's examples offered to the buffer.
        """
        return {}

    def buffer_path(self, task_index: int):
        return self.task_state_dir(task_index) / "buffer.safetensors"

    def save_buffer(self, task_index: int, buffer: ReplayBuffer) -> None:
        if self.state_dir is not None and self.accelerator.is_main_process:
            buffer.save(self.buffer_path(task_index))
        self.accelerator.wait_for_everyone()

    def load_buffer(self, task_index: int) -> ReplayBuffer:
        path = self.buffer_path(task_index) if self.state_dir is not None else None
        if path is None or not path.is_file():
            raise ValueError(
                f"The replay buffer after task {task_index + 1} is missing ({path}); the run cannot continue without "
                "the images it stored. Start the run again in a new --output_dir."
            )
        return ReplayBuffer.load(path)
