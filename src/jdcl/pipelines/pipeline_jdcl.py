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

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from ..models.joint_unet_2d import JointUNet2DModel


logger = logging.get_logger(__name__)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[PIL.Image.Image] | Sequence[np.ndarray]


@dataclass
class JDCLClassificationOutput(BaseOutput):
    """
    The output of [`JDCLPipeline.classify`].

    Args:
        labels (`torch.Tensor` of shape `(batch_size,)`): The predicted class of each image.
        probabilities (`torch.Tensor` of shape `(batch_size, num_classes)`):
            Class probabilities; classes outside `classes` get probability 0.
    """

    labels: torch.Tensor
    probabilities: torch.Tensor


@dataclass
class JDCLRehearsalOutput(BaseOutput):
    """
    The output of [`JDCLPipeline.generate_rehearsal`].

    Args:
        images (`torch.Tensor` of shape `(num_samples, channels, height, width)`): Rehearsal images in [-1, 1].
        labels (`torch.Tensor` of shape `(num_samples,)`): The label of each image, given by the model's own classifier.
        num_generated (`int`): How many samples were generated in all, kept or not.
        num_filled (`int`): How many images are flipped/cropped copies that filled classes still short.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_generated: int
    num_filled: int


class JDCLPipeline(DiffusionPipeline):
    r"""
    Pipeline for a JDCL joint diffusion model: unconditional and class-conditional image generation, rehearsal
    generation for continual learning, and image classification with the same network.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Class-conditional sampling needs no class embedding: it is guided by the model's own classifier, read on the
    predicted clean image at every step.

    Parameters:
        unet ([`JointUNet2DModel`]):
            The joint diffusion model and classifier.
        scheduler ([`SchedulerMixin`]):
            A scheduler to denoise the images, e.g. [`DDIMScheduler`] or [`DDPMScheduler`]. Guidance needs one with
            `alphas_cumprod`.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: JointUNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        if not isinstance(unet, JointUNet2DModel):
            raise ValueError(
                f"JDCLPipeline needs a `JointUNet2DModel`, got `{type(unet).__name__}`. This checkpoint holds another "
                "model; load a JDCL checkpoint (its `unet/config.json` has `_class_name: JointUNet2DModel`)."
            )
        self.register_modules(unet=unet, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def num_classes(self) -> int:
        return self.unet.config.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        sample_size = self.unet.config.sample_size
        if sample_size is None:
            raise ValueError("The model has no `sample_size`; set `unet.config.sample_size` to sample images.")
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return (self.unet.config.in_channels, height, width)

    def _class_mask(self, classes: Sequence[int] | None, device: torch.device) -> torch.Tensor | None:
        if classes is None:
            return None
        classes = [int(class_index) for class_index in classes]
        if len(classes) == 0:
            raise ValueError("`classes` is empty; pass the classes to predict among, or None for all classes.")
        unknown = sorted({class_index for class_index in classes if not 0 <= class_index < self.num_classes})
        if unknown:
            raise ValueError(
                f"Unknown classes {unknown}: this model has classes 0..{self.num_classes - 1}. Pass class indices in range."
            )
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
        mask[classes] = True
        return mask

    def masked_logits(
        self,
        images: torch.Tensor,
        classes: Sequence[int] | None = None,
        classifier: JointUNet2DModel | None = None,
    ) -> torch.Tensor:
        r"""
        The model's logits for clean images in [-1, 1], with classes outside `classes` set to `-inf`.

        Args:
            images (`torch.Tensor`): Images in [-1, 1] of shape `(batch, channels, height, width)`.
            classes (`Sequence[int]`, *optional*, defaults to `None`): The classes to predict among; all when `None`.
            classifier ([`JointUNet2DModel`], *optional*, defaults to `None`):
                Another model to classify with; the pipeline's own `unet` when `None`.

        Returns:
            `torch.Tensor` of shape `(batch, num_classes)`.
        """
        classifier = self.unet if classifier is None else classifier
        logits = classifier.classify(images.to(device=classifier.device, dtype=classifier.dtype)).float()
        mask = self._class_mask(classes, logits.device)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits

    def _labels_tensor(self, class_labels: int | Sequence[int] | torch.Tensor, batch_size: int) -> torch.Tensor:
        if isinstance(class_labels, int):
            class_labels = [class_labels] * batch_size
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 0:
            raise ValueError(
                "`class_labels` is empty; pass at least one class index, or None to sample unconditionally."
            )
        if batch_size not in (1, labels.numel()):
            raise ValueError(
                f"`batch_size` is {batch_size} but {labels.numel()} `class_labels` were given; pass one label per image."
            )
        self._class_mask(labels.tolist(), labels.device)
        return labels.to(self._execution_device)

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
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        classes: Sequence[int] | None = None,
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
            class_labels (`int`, `Sequence[int]` or `torch.Tensor`, *optional*, defaults to `None`):
                Class of each image (one int for all). Sampling is then guided by the model's own classifier.
            num_inference_steps (`int`, *optional*, defaults to 50):
                Number of denoising steps. More steps give better images at the cost of slower sampling.
            guidance_scale (`float`, *optional*, defaults to 3.0):
                Strength of classifier guidance towards `class_labels`; 0 samples unguided. Ignored without labels.
            classes (`Sequence[int]`, *optional*, defaults to `None`):
                Classes the guiding classifier chooses among (for example the classes seen so far); all when `None`.
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

        >>> pipe = JDCLPipeline.from_pretrained("path/to/run/task-5")
        >>> images = pipe(class_labels=[0, 1, 2], num_inference_steps=50).images
        >>> pipe.classify(images).labels
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images; a tuple whose first element is the
            list of images when `return_dict` is `False`.
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        labels = None
        if class_labels is not None:
            labels = self._labels_tensor(class_labels, batch_size)
            batch_size = labels.numel()

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
        channels, height, width = self.image_shape
        if isinstance(images, PIL.Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("No images to classify: pass at least one image.")
        if isinstance(images, (list, tuple)) and isinstance(images[0], PIL.Image.Image):
            mode = "L" if channels == 1 else "RGB"
            images = [
                image.convert(mode).resize((width, height), PIL.Image.Resampling.BILINEAR)
                if image.size != (width, height)
                else image.convert(mode)
                for image in images
            ]
            images = self.image_processor.pil_to_numpy(images)
            if images.ndim == 3:
                images = images[..., None]
        if isinstance(images, (list, tuple)):
            images = np.stack([np.asarray(image) for image in images])
        if isinstance(images, np.ndarray):
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4:
                raise ValueError(f"Numpy images must be (batch, height, width, channels), got shape {images.shape}.")
            images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if not isinstance(images, torch.Tensor):
            raise ValueError(
                f"Cannot classify images of type {type(images).__name__}; pass PIL images, numpy or torch."
            )
        if images.ndim == 3:
            images = images[None]
        if images.dtype == torch.uint8:
            raise ValueError("Images are uint8; pass floats in [0, 1] (divide by 255) as the pipeline outputs them.")
        if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
            raise ValueError(
                "Image values must be in [0, 1], the pipeline's output convention; got values in "
                f"[{images.min().item():.3f}, {images.max().item():.3f}]. Map [-1, 1] images with (x + 1) / 2."
            )
        images = self.image_processor.normalize(images.float())
        return images.to(device=self._execution_device, dtype=self.unet.dtype)

    @torch.no_grad()
    def classify(
        self, images: ImageInput, classes: Sequence[int] | None = None, batch_size: int = 256
    ) -> JDCLClassificationOutput:
        r"""
        Classifies images with the model's own classifier.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Images in the pipeline's output convention; see [`~JDCLPipeline.preprocess_images`].
            classes (`Sequence[int]`, *optional*, defaults to `None`):
                The classes to predict among, e.g. the classes seen so far in a continual run; the others are masked
                out (probability 0). All classes when `None`.
            batch_size (`int`, *optional*, defaults to 256): How many images go through the model at once.

        Returns:
            [`JDCLClassificationOutput`]: `labels` of shape `(batch,)` and `probabilities` of shape
            `(batch, num_classes)`.
        """
        pixel_values = self.preprocess_images(images)
        logits = torch.cat(
            [self.masked_logits(chunk, classes) for chunk in pixel_values.split(batch_size)], dim=0
        ).cpu()
        probabilities = logits.softmax(dim=-1)
        return JDCLClassificationOutput(labels=probabilities.argmax(dim=-1), probabilities=probabilities)

    def generate_rehearsal(
        self,
        classes: Sequence[int],
        samples_per_class: int | dict[int, int],
        batch_size: int = 64,
        num_inference_steps: int = 250,
        sampler: str = "label",
        guidance_scale: float = 3.0,
        max_sampling_factor: float = 2.0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        show_progress: bool = True,
        classifier: JointUNet2DModel | None = None,
        selection: str = "first",
    ) -> JDCLRehearsalOutput:
        r"""
        Generates labelled rehearsal data for continual learning, as in JDCL: sample in batches, label every sample
        with the model's own classifier (restricted to `classes`), and keep it while its class is short of its quota.

        Sampling stops when every quota is met or after `max_sampling_factor` times the needed total (with
        `selection="confident"`, always the latter, keeping each class's most confident samples). A class still
        short is then filled with randomly flipped and shifted copies of its own kept samples; a class with no kept
        sample at all is filled with samples guided towards it.

        Args:
            classes (`Sequence[int]`): The classes to generate (for example the classes of earlier tasks).
            samples_per_class (`int` or `dict[int, int]`): The quota of every class, or one quota per class.
            batch_size (`int`, *optional*, defaults to 64): Images sampled at once.
            num_inference_steps (`int`, *optional*, defaults to 250): Denoising steps per sample.
            sampler (`str`, *optional*, defaults to `"label"`):
                `"label"`: unguided samples, labelled and kept (the paper's way). `"guided"`: each batch is guided
                towards the classes still short (by the model's own classifier), then labelled and kept the same way.
            guidance_scale (`float`, *optional*, defaults to 3.0): Guidance strength for `sampler="guided"`.
            max_sampling_factor (`float`, *optional*, defaults to 2.0):
                Stop sampling after this many times the total quota.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta.
            generator (`torch.Generator`, *optional*, defaults to `None`): Makes generation deterministic.
            show_progress (`bool`, *optional*, defaults to `True`): Whether to show a progress bar.
            classifier ([`JointUNet2DModel`], *optional*, defaults to `None`):
                A separately trained model that labels the samples instead of the pipeline's own classifier (the
                "without joint modelling" ablation).
            selection (`str`, *optional*, defaults to `"first"`):
                `"first"`: keep samples in the order they come, until each quota is met (the paper's way).
                `"confident"`: always draw `max_sampling_factor` times the total, then keep the samples that the
                labelling classifier is most confident about, per class. Fewer ambiguous or malformed samples reach
                the rehearsal set, at the price of the whole sampling budget.

        Returns:
            [`JDCLRehearsalOutput`]: the images in [-1, 1], their labels, and the sampling counts.
        """
        if sampler not in ("label", "guided"):
            raise ValueError(f"`sampler` must be 'label' or 'guided', got {sampler!r}.")
        if selection not in ("first", "confident"):
            raise ValueError(f"`selection` must be 'first' or 'confident', got {selection!r}.")
        classes = [int(class_index) for class_index in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"`classes` has repeated entries: {classes}.")
        self._class_mask(classes, self._execution_device)
        if isinstance(samples_per_class, int):
            quotas = dict.fromkeys(classes, samples_per_class)
        else:
            quotas = {int(class_index): int(quota) for class_index, quota in samples_per_class.items()}
            if set(quotas) != set(classes):
                raise ValueError("`samples_per_class` must give a quota for exactly the classes in `classes`.")
        if any(quota < 0 for quota in quotas.values()):
            raise ValueError(f"Quotas must not be negative, got {quotas}.")
        total_needed = sum(quotas.values())
        kept_images: dict[int, list[torch.Tensor]] = {class_index: [] for class_index in classes}
        kept_counts = dict.fromkeys(classes, 0)
        # "confident" keeps every labelled sample as a candidate, with its confidence, and chooses at the end.
        candidates: dict[int, list[tuple[float, torch.Tensor]]] = {class_index: [] for class_index in classes}
        num_generated = 0
        max_generated = int(max_sampling_factor * total_needed)

        def still_sampling() -> bool:
            if num_generated >= max_generated:
                return False
            return selection == "confident" or any(kept_counts[c] < quotas[c] for c in classes)

        progress = None
        if show_progress:
            progress = self.progress_bar(total=max_generated if selection == "confident" else total_needed)
        while still_sampling():
            current_batch = min(batch_size, max_generated - num_generated)
            class_labels = None
            if sampler == "guided":
                class_labels = self._targets_for_short_classes(quotas, kept_counts, current_batch)
            images = self.sample_images(
                current_batch,
                class_labels=class_labels,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                classes=classes,
                eta=eta,
                generator=generator,
                show_progress=False,
            )
            num_generated += current_batch
            with torch.no_grad():
                confidences, labels = self.masked_logits(images, classes, classifier).softmax(dim=-1).max(dim=-1)
            for image, label, confidence in zip(images, labels.tolist(), confidences.tolist()):
                if selection == "confident":
                    candidates[label].append((confidence, image))
                    kept_counts[label] = min(quotas[label], kept_counts[label] + 1)
                elif kept_counts[label] < quotas[label]:
                    kept_images[label].append(image)
                    kept_counts[label] += 1
                    if progress is not None:
                        progress.update(1)
            if selection == "confident" and progress is not None:
                progress.update(current_batch)
        if progress is not None:
            progress.close()
        if selection == "confident":
            for class_index in classes:
                ranked = sorted(candidates[class_index], key=lambda candidate: -candidate[0])
                kept_images[class_index] = [image for _, image in ranked[: quotas[class_index]]]

        num_filled = 0
        for class_index in classes:
            missing = quotas[class_index] - kept_counts[class_index]
            if missing <= 0:
                continue
            if kept_counts[class_index] == 0:
                logger.warning(
                    f"Class {class_index}: none of {num_generated} samples was labelled as it; filling its quota of "
                    f"{missing} with samples guided towards it."
                )
                fill = self.sample_images(
                    missing,
                    class_labels=torch.full((missing,), class_index, device=self._execution_device),
                    num_inference_steps=num_inference_steps,
                    guidance_scale=max(guidance_scale, 1.0),
                    classes=classes,
                    eta=eta,
                    generator=generator,
                    show_progress=False,
                )
            else:
                fill = self._flip_and_shift(torch.stack(kept_images[class_index]), missing, generator)
            kept_images[class_index].extend(fill)
            num_filled += missing

        images = [image for class_index in classes for image in kept_images[class_index]]
        labels = [class_index for class_index in classes for _ in kept_images[class_index]]
        channels, height, width = self.image_shape
        return JDCLRehearsalOutput(
            images=torch.stack(images) if images else torch.empty(0, channels, height, width),
            labels=torch.tensor(labels, dtype=torch.long),
            num_generated=num_generated,
            num_filled=num_filled,
        )

    @staticmethod
    def _targets_for_short_classes(
        quotas: dict[int, int], kept_counts: dict[int, int], batch_size: int
    ) -> torch.Tensor:
        # Spread the batch over the classes still short, in proportion to what each still needs.
        missing = {c: quotas[c] - kept_counts[c] for c in quotas if kept_counts[c] < quotas[c]}
        if not missing:
            # Every quota is met but sampling goes on (confident selection): guide towards all classes by quota.
            missing = {c: quota for c, quota in quotas.items() if quota > 0}
        total_missing = sum(missing.values())
        targets = []
        for class_index, count in missing.items():
            targets += [class_index] * max(1, round(batch_size * count / total_missing))
        targets = (targets * (batch_size // len(targets) + 1))[:batch_size]
        return torch.tensor(targets, dtype=torch.long)

    @staticmethod
    def _flip_and_shift(images: torch.Tensor, count: int, generator: torch.Generator | None) -> list[torch.Tensor]:
        # The paper's fill rule for a class still short after sampling: flipped / cropped copies of its own samples.
        height, width = images.shape[-2:]
        padding = max(1, height // 8)
        cpu_generator = None
        if generator is not None:
            seed = torch.randint(0, 2**31, (1,), generator=generator, device=generator.device)
            cpu_generator = torch.Generator().manual_seed(int(seed))
        sources = torch.randint(0, images.shape[0], (count,), generator=cpu_generator).tolist()
        flips = torch.rand(count, generator=cpu_generator).lt(0.5).tolist()
        offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=cpu_generator).tolist()
        padded = F.pad(images, (padding, padding, padding, padding), mode="replicate")
        copies = []
        for source, flip, (top, left) in zip(sources, flips, offsets):
            copy = padded[source, :, top : top + height, left : left + width]
            copies.append(copy.flip(-1) if flip else copy)
        return copies
