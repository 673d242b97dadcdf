# Copyright 2026 The jdcl authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from ..models import JointUNet2DModel, class_mask, mask_logits
from .pipeline_inputs import (
    ImageInput,
    check_generator,
    check_sampling_arguments,
    images_to_unit_range_tensor,
    is_class_index,
)


logger = logging.get_logger(__name__)


@dataclass
class JDCLClassificationOutput(BaseOutput):
    """
    The output of [`JDCLPipeline.classify`].

    Args:
        labels (`torch.Tensor` of shape `(batch_size,)`): The predicted class index of each image.
        probabilities (`torch.Tensor` of shape `(batch_size, num_classes)`):
            Class probabilities; classes outside `classes` get probability 0.
        label_names (`list[str]`): The name of each predicted class.
    """

    labels: torch.Tensor
    probabilities: torch.Tensor
    label_names: list[str]


class JDCLPipeline(DiffusionPipeline):
    r"""
    Pipeline for a JDCL joint diffusion model: unconditional and class-conditional image generation, rehearsal
    generation for continual learning, and image classification with the same network.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Class-conditional sampling needs no class embedding: it is guided by the model's own classifier, read on the
    predicted clean image at every step.

    A pipeline saved after a task of a continual run knows its classes: their names, the order in which they were
    learned, which of them the model has seen, and after which task it was saved. `classify` then predicts among the
    seen classes, and `class_labels` may be names. Checkpoints without that record load too; they treat every class
    as seen.

    Parameters:
        unet ([`JointUNet2DModel`]):
            The joint diffusion model and classifier.
        scheduler ([`SchedulerMixin`]):
            A scheduler to denoise the images, e.g. [`DDIMScheduler`] or [`DDPMScheduler`]. Guidance needs one with
            `alphas_cumprod`.
        class_names (`list[str]`, *optional*, defaults to `None`):
            The name of every class of the head, indexed by class index; `"0"`, `"1"`, ... when `None`.
        class_order (`list[int]`, *optional*, defaults to `None`): The order in which the run learns the classes.
        seen_classes (`list[int]`, *optional*, defaults to `None`):
            The classes the model has been trained on; every class when `None`.
        task_index (`int`, *optional*, defaults to `None`): After which task (1-based, the K of `task-K`) it was saved.
        num_tasks (`int`, *optional*, defaults to `None`): The number of tasks of the run.
        tasks (`list[list[int]]`, *optional*, defaults to `None`):
            The classes of each task trained so far, in order: what a run that continues this checkpoint rehearses.
        accuracy_matrix (`list[list[float]]`, *optional*, defaults to `None`):
            The run's accuracy matrix up to this task (row `i`: the accuracy on each task after training task `i`).
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: JointUNet2DModel,
        scheduler: SchedulerMixin,
        class_names: list[str] | None = None,
        class_order: list[int] | None = None,
        seen_classes: list[int] | None = None,
        task_index: int | None = None,
        num_tasks: int | None = None,
        tasks: list[list[int]] | None = None,
        # Untyped: diffusers' type check on loading does not read `float | None` inside lists.
        accuracy_matrix: list | None = None,
    ):
        super().__init__()
        if not isinstance(scheduler, SchedulerMixin):
            raise ValueError(
                f"JDCLPipeline needs a diffusers scheduler, got {type(scheduler).__name__}; pass e.g. "
                "`DDIMScheduler(num_train_timesteps=1000)` as `scheduler`."
            )
        if not isinstance(unet, JointUNet2DModel):
            raise ValueError(
                f"JDCLPipeline needs a `JointUNet2DModel`, got `{type(unet).__name__}`. This checkpoint holds another "
                "model; load a JDCL checkpoint (its `unet/config.json` has `_class_name: JointUNet2DModel`)."
            )
        num_classes = unet.config.num_classes
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} names but the model has {num_classes} classes; pass one name "
                "per class, indexed by class index."
            )
        if class_names is not None and len(set(map(str, class_names))) != len(class_names):
            repeated = sorted({str(n) for n in class_names if list(map(str, class_names)).count(str(n)) > 1})
            raise ValueError(
                f"`class_names` repeats {repeated}; a repeated name cannot be asked for by name. Give every class its "
                "own name."
            )
        if seen_classes is not None and len(seen_classes) == 0:
            raise ValueError(
                "`seen_classes` is empty: a pipeline must have seen at least one class. Pass the classes the model "
                "was trained on, or None for every class."
            )
        for classes in (class_order, seen_classes):
            if classes is not None:
                class_mask(classes, num_classes)
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            class_names=None if class_names is None else [str(name) for name in class_names],
            class_order=None if class_order is None else [int(c) for c in class_order],
            seen_classes=None if seen_classes is None else [int(c) for c in seen_classes],
            task_index=task_index,
            num_tasks=num_tasks,
            tasks=None if tasks is None else [[int(c) for c in task] for task in tasks],
            accuracy_matrix=accuracy_matrix,
        )
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def num_classes(self) -> int:
        return self.unet.config.num_classes

    @property
    def class_names(self) -> list[str]:
        """`list[str]`: The name of every class, indexed by class index."""
        names = self.config.get("class_names")
        return list(names) if names is not None else [str(index) for index in range(self.num_classes)]

    @property
    def seen_classes(self) -> list[int]:
        """`list[int]`: The classes the model has been trained on (every class for a checkpoint without a record)."""
        seen = self.config.get("seen_classes")
        return list(seen) if seen is not None else list(range(self.num_classes))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        sample_size = self.unet.config.sample_size
        if sample_size is None:
            raise ValueError("The model has no `sample_size`; set `unet.config.sample_size` to sample images.")
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return (self.unet.config.in_channels, height, width)

    def class_indices(
        self, classes: int | str | Sequence[int | str], argument: str = "classes", seen_only: bool = True
    ) -> list[int]:
        r"""
        Class indices of classes given by index or by name; refuses unknown classes and, with `seen_only`, classes
        the model has not been trained on.

        Args:
            classes (`int`, `str` or a sequence of them): Class indices or names.
            argument (`str`, *optional*, defaults to `"classes"`): The argument's name, for the error message.
            seen_only (`bool`, *optional*, defaults to `True`): Whether to refuse classes the model has not seen.
        """
        if isinstance(classes, (int, str)):
            classes = [classes]
        names = self.class_names
        indices = []
        for value in classes:
            if isinstance(value, str) and value in names:
                indices.append(names.index(value))
            elif isinstance(value, str):
                raise ValueError(f"Unknown class {value!r} in `{argument}`: this model's classes are {names}.")
            elif not is_class_index(value):
                raise ValueError(f"`{argument}` must hold class indices or names, got {value!r}.")
            else:
                indices.append(int(value))
        class_mask(indices, self.num_classes)
        unseen = sorted(set(indices) - set(self.seen_classes))
        if seen_only and unseen:
            seen = [names[c] for c in self.seen_classes]
            raise ValueError(
                f"`{argument}` asks for classes {[names[c] for c in unseen]} that this model has not seen (it was "
                f"trained on {seen}); pass seen classes, or load the checkpoint of a later task."
            )
        return indices

    def masked_logits(self, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        r"""
        The model's logits for clean images in [-1, 1], with classes outside `classes` set to `-inf`.

        Args:
            images (`torch.Tensor`): Images in [-1, 1] of shape `(batch, channels, height, width)`.
            classes (`Sequence[int]`, *optional*, defaults to `None`): The classes to predict among; all when `None`.

        Returns:
            `torch.Tensor` of shape `(batch, num_classes)`.
        """
        logits = self.unet.classify(images.to(device=self.unet.device, dtype=self.unet.dtype)).float()
        return mask_logits(logits, classes)

    def _labels_tensor(
        self, class_labels: int | str | Sequence[int | str] | torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        if isinstance(class_labels, (int, str)):
            class_labels = [class_labels] * batch_size
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.reshape(-1).tolist()
        if len(class_labels) == 0:
            raise ValueError(
                "`class_labels` is empty; pass at least one class index or name, or None to sample unconditionally."
            )
        if batch_size not in (1, len(class_labels)):
            raise ValueError(
                f"`batch_size` is {batch_size} but {len(class_labels)} `class_labels` were given; pass one label per "
                "image."
            )
        labels = self.class_indices(class_labels, argument="class_labels")
        return torch.tensor(labels, dtype=torch.long, device=self._execution_device)

    def _guided_noise_pred(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        noise_pred: torch.Tensor,
        class_labels: torch.Tensor,
        guidance_scale: float,
        classes: Sequence[int] | None,
    ) -> torch.Tensor:
        # Classifier guidance with the model's own classifier, read on the predicted clean image (the classifier only
        # knows t = 0): eps - s * sqrt(1 - alpha_bar) * grad log p(y | x0_hat). The gradient at x0_hat stands in for
        # the gradient at x_t; the chain rule's 1 / sqrt(alpha_bar) ignores that eps itself follows x_t and blows up at
        # high noise. The gradient does not go back through the UNet: a guided step costs about one UNet forward plus
        # one encoder forward and backward.
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise ValueError(
                f"`{type(self.scheduler).__name__}` has no `alphas_cumprod`, which classifier guidance needs; use a "
                "DDIM or DDPM scheduler, or sample with `guidance_scale=0`."
            )
        step_index = int(torch.as_tensor(timestep).round().clamp(0, len(alphas_cumprod) - 1))
        alpha_prod_t = alphas_cumprod[step_index].to(device=model_input.device, dtype=torch.float32)
        beta_prod_t = 1 - alpha_prod_t
        sample = model_input.float()
        pred_original_sample = (sample - beta_prod_t.sqrt() * noise_pred.float()) / alpha_prod_t.sqrt()
        with torch.enable_grad():
            pred_original_sample = pred_original_sample.detach().requires_grad_(True)
            log_probs = F.log_softmax(self.masked_logits(pred_original_sample, classes), dim=-1)
            selected = log_probs.gather(1, class_labels[:, None]).sum()
            (grad_original,) = torch.autograd.grad(selected, pred_original_sample)
        guided_original = (
            pred_original_sample.detach() + guidance_scale * beta_prod_t / alpha_prod_t.sqrt() * grad_original
        )
        if self.scheduler.config.get("clip_sample", False):
            # Clip here and hand the scheduler the noise that matches the clipped sample: if the scheduler clipped
            # x0 itself, the guidance term would survive only in the noise and push x_t away from the class.
            clip_range = self.scheduler.config.get("clip_sample_range", 1.0)
            guided_original = guided_original.clamp(-clip_range, clip_range)
        guided_noise = (sample - alpha_prod_t.sqrt() * guided_original) / beta_prod_t.sqrt()
        return guided_noise.to(noise_pred.dtype)

    def _prepare_extra_step_kwargs(self, generator: torch.Generator | None, eta: float) -> dict:
        accepted = set(inspect.signature(self.scheduler.step).parameters.keys())
        extra_step_kwargs = {}
        if "eta" in accepted:
            extra_step_kwargs["eta"] = eta
        if "generator" in accepted:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    def sample_images(
        self,
        batch_size: int,
        class_labels: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 0.0,
        classes: Sequence[int] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        show_progress: bool = True,
    ) -> torch.Tensor:
        r"""
        The sampling loop, returning images in [-1, 1] as a tensor (what [`~JDCLPipeline.__call__`] post-processes).

        Args:
            batch_size (`int`): Number of images.
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                One target class per image for guided sampling; unconditional sampling when `None`.
            num_inference_steps (`int`, *optional*, defaults to 50): Number of denoising steps.
            guidance_scale (`float`, *optional*, defaults to 0.0): Strength of the classifier guidance.
            classes (`Sequence[int]`, *optional*, defaults to `None`): Classes the guiding classifier chooses among.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta; ignored by schedulers without it.
            generator (`torch.Generator`, *optional*, defaults to `None`): Makes sampling deterministic.
            show_progress (`bool`, *optional*, defaults to `True`): Whether to show the progress bar.

        Returns:
            `torch.Tensor` of shape `(batch_size, channels, height, width)` in [-1, 1].
        """
        check_sampling_arguments(batch_size, num_inference_steps, guidance_scale, eta)
        check_generator(generator, batch_size)
        device = self._execution_device
        image = randn_tensor(
            (batch_size, *self.image_shape), generator=generator, device=device, dtype=self.unet.dtype
        )
        image = image * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        extra_step_kwargs = self._prepare_extra_step_kwargs(generator, eta)
        guided = class_labels is not None and guidance_scale != 0
        if guided:
            # Labels may come from the CPU (a list, or the rehearsal quotas); the classifier's logits are on `device`.
            class_labels = class_labels.to(device)

        timesteps = self.scheduler.timesteps
        iterator = self.progress_bar(timesteps) if show_progress else timesteps
        for t in iterator:
            model_input = self.scheduler.scale_model_input(image, t)
            with torch.no_grad():
                noise_pred = self.unet(model_input, t).sample
            if guided:
                noise_pred = self._guided_noise_pred(model_input, t, noise_pred, class_labels, guidance_scale, classes)
            image = self.scheduler.step(noise_pred, t, image, **extra_step_kwargs).prev_sample
        return image.clamp(-1, 1)

    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | str | Sequence[int | str] | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        classes: Sequence[int | str] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images, unconditionally or of the given classes.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                Number of images to generate; with a list of `class_labels`, their number.
            class_labels (`int`, `str`, a sequence of them or `torch.Tensor`, *optional*, defaults to `None`):
                Class of each image, by index or name (one for all). Sampling is then guided by the model's own
                classifier. Classes the model has not seen are refused.
            num_inference_steps (`int`, *optional*, defaults to 50):
                Number of denoising steps. More steps give better images at the cost of slower sampling.
            guidance_scale (`float`, *optional*, defaults to 3.0):
                Strength of classifier guidance towards `class_labels`; 0 samples unguided. Ignored without labels.
            classes (`Sequence[int]` or `Sequence[str]`, *optional*, defaults to `None`):
                Classes the guiding classifier chooses among; the classes the model has seen when `None`.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta; ignored by schedulers without it.
            generator (`torch.Generator`, *optional*, defaults to `None`):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html) to make
                generation deterministic.
            output_type (`str`, *optional*, defaults to `"pil"`):
                The output format: `"pil"` (`PIL.Image.Image`), `"np"` (`np.ndarray` in [0, 1], channels last) or
                `"pt"` (`torch.Tensor` in [0, 1], channels first).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.

        Examples:

        ```py
        >>> import jdcl
        >>> from jdcl import JDCLPipeline

        >>> pipe = JDCLPipeline.from_pretrained("path/to/run/task-2")
        >>> images = pipe(class_labels=["0", "1", "2"], num_inference_steps=50).images
        >>> pipe.classify(images).label_names
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images; a tuple whose first element is the
            list of images when `return_dict` is `False`.
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        check_sampling_arguments(batch_size, num_inference_steps, guidance_scale, eta)
        labels = None
        if class_labels is not None:
            labels = self._labels_tensor(class_labels, batch_size)
            batch_size = labels.numel()
        classes = self.seen_classes if classes is None else self.class_indices(classes, seen_only=False)
        if labels is not None and guidance_scale != 0:
            outside = sorted(set(labels.tolist()) - set(classes))
            if outside:
                names = self.class_names
                raise ValueError(
                    f"`class_labels` asks for {[names[c] for c in outside]}, outside the `classes` the guiding "
                    f"classifier chooses among ({[names[c] for c in classes]}); add them to `classes`, or leave "
                    "`classes` out."
                )

        image = self.sample_images(
            batch_size,
            class_labels=labels,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            classes=classes,
            eta=eta,
            generator=generator,
        )
        image = self.image_processor.postprocess(image.float(), output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        r"""
        Converts images in the pipeline's own output convention to model input in [-1, 1].

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of PIL images or arrays):
                PIL images (resized to the model's size and converted to its channels), numpy arrays in [0, 1] of
                shape `(batch, height, width, channels)` or `(height, width, channels)`, or tensors in [0, 1] of shape
                `(batch, channels, height, width)` or `(channels, height, width)` (what `output_type="np"` and `"pt"`
                give).

        Returns:
            `torch.Tensor` of shape `(batch, channels, height, width)` in [-1, 1] on the model's device.
        """
        images = images_to_unit_range_tensor(images, self.image_shape, self.image_processor)
        images = self.image_processor.normalize(images)
        return images.to(device=self._execution_device, dtype=self.unet.dtype)

    @torch.no_grad()
    def classify(
        self, images: ImageInput, classes: Sequence[int | str] | None = None, batch_size: int = 256
    ) -> JDCLClassificationOutput:
        r"""
        Classifies images with the model's own classifier.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Images in the pipeline's output convention; see [`~JDCLPipeline.preprocess_images`].
            classes (`Sequence[int]` or `Sequence[str]`, *optional*, defaults to `None`):
                The classes to predict among, by index or name; the others are masked out (probability 0). The
                classes the model has seen when `None` (every class for a checkpoint that does not record them).
            batch_size (`int`, *optional*, defaults to 256): How many images go through the model at once.

        Returns:
            [`JDCLClassificationOutput`]: `labels` of shape `(batch,)`, `probabilities` of shape
            `(batch, num_classes)` and the `label_names`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        classes = self.seen_classes if classes is None else self.class_indices(classes, seen_only=False)
        pixel_values = self.preprocess_images(images)
        logits = torch.cat(
            [self.masked_logits(chunk, classes) for chunk in pixel_values.split(batch_size)], dim=0
        ).cpu()
        probabilities = logits.softmax(dim=-1)
        labels = probabilities.argmax(dim=-1)
        names = self.class_names
        return JDCLClassificationOutput(
            labels=labels, probabilities=probabilities, label_names=[names[label] for label in labels.tolist()]
        )
