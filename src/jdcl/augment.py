"""The paper's augmented views, computed batched on the images' device with kornia: the two views of a supervised
stage, and FixMatch's weak and strong views of a semi-supervised one."""

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment

from .randaugment import FixMatchRandAugment


class TwoViewAugmentation(torch.nn.Module):
    """
    Produces the views JDCL trains on: a mild one for the diffusion loss and a strong one for the classifier (a
    supervised stage), and FixMatch's weak and strong views (a semi-supervised one).

    Diffusion view: random horizontal flip, then `RandomResizedCrop` (scale `diffusion_crop_scale`, aspect ratio
    3/4..4/3) back to `resolution`. Classifier view: random horizontal flip, random crop after zero padding,
    kornia's `RandAugment(randaugment_n, randaugment_m)`, then Cutout. FixMatch's views, as the authors'
    `diffmatch_pooling` configs build them in their dataloader: weak = random horizontal flip + random crop after reflect padding
    (`classifier_crop_padding`); strong = the same (drawn anew) + [`FixMatchRandAugment`] + Cutout. Every flip is
    left out with `horizontal_flip=False` (a flipped digit is another glyph).

    All views are drawn from torch's global random generator, so they are reproducible under `torch.manual_seed`.

    Args:
        resolution (`int`):
            Side of the square input and output images.
        num_channels (`int`):
            1 or 3.
        diffusion_crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.85, 1.0)`):
            Range of the area fraction kept by the diffusion view's `RandomResizedCrop`.
        classifier_crop_padding (`int`, *optional*, defaults to `None`):
            Padding of the random crop of the classifier view (zeros) and of FixMatch's views (reflected); `None`
            means `resolution // 8` (4 at 32x32, as in the authors' CIFAR settings).
        randaugment_n (`int`, *optional*, defaults to 2):
            Number of RandAugment operations applied to each image.
        randaugment_m (`int`, *optional*, defaults to 10):
            RandAugment magnitude, on kornia's 0..30 scale.
        cutout_size (`int`, *optional*, defaults to `None`):
            Side of the Cutout square of the classifier view and of FixMatch's strong view; `None` means
            `resolution // 2`: the authors' 16 pixels at 32x32, and the same share of a smaller image (8 pixels at
            16x16, 4 at 8x8); 0 disables Cutout. The square is set to 0 in [-1, 1], i.e. mid-gray (the authors fill
            127 of 255), and its centre is uniform over the image so that it may be clipped at the border.
        randaugment_group_size (`int`, *optional*, defaults to 8):
            kornia's RandAugment draws its operations once per call, for the whole batch; the batch is therefore cut
            into groups of this many images, each with its own operations. 1 gives per-image operations like
            torchvision (and the authors' code) but costs a call per image (about 65 ms for 64 images on 2 CPU
            cores, against about 9 ms with groups of 8).
        horizontal_flip (`bool`, *optional*, defaults to `True`):
            Whether every view flips images at random (the authors' CIFAR views do); `False` for digits.
        enabled (`bool`, *optional*, defaults to `True`):
            If `False`, the diffusion and classifier views are the input tensor itself (FixMatch's weak and strong
            views are made either way).
    """

    def __init__(
        self,
        resolution: int,
        num_channels: int,
        diffusion_crop_scale: tuple[float, float] = (0.85, 1.0),
        classifier_crop_padding: int | None = None,
        randaugment_n: int = 2,
        randaugment_m: int = 10,
        cutout_size: int | None = None,
        randaugment_group_size: int = 8,
        horizontal_flip: bool = True,
        enabled: bool = True,
    ):
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution}. Pass e.g. --resolution 32.")
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}. Pass --num_channels 1 or 3.")
        low, high = diffusion_crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"diffusion_crop_scale must satisfy 0 < low <= high <= 1, got {diffusion_crop_scale}. "
                "Pass e.g. (0.85, 1.0)."
            )
        if classifier_crop_padding is None:
            classifier_crop_padding = resolution // 8
        if classifier_crop_padding < 0:
            raise ValueError(f"classifier_crop_padding must be >= 0, got {classifier_crop_padding}.")
        if cutout_size is None:
            cutout_size = resolution // 2
        if cutout_size < 0:
            raise ValueError(f"cutout_size must be >= 0 (0 disables Cutout), got {cutout_size}.")
        if randaugment_n < 0 or not 0 < randaugment_m < 30:
            raise ValueError(
                f"Got randaugment_n={randaugment_n}, randaugment_m={randaugment_m}; n must be >= 0 (0 disables "
                "RandAugment) and m strictly between 0 and 30 (kornia's magnitude scale). Pass e.g. n=2, m=10."
            )
        if randaugment_group_size < 1:
            raise ValueError(
                f"randaugment_group_size must be >= 1, got {randaugment_group_size}. Pass 1 for per-image operations."
            )

        self.resolution = resolution
        self.num_channels = num_channels
        self.classifier_crop_padding = classifier_crop_padding
        self.cutout_size = cutout_size
        self.randaugment_n = randaugment_n
        self.randaugment_group_size = randaugment_group_size
        self.horizontal_flip = horizontal_flip
        self.enabled = enabled

        flip = [K.RandomHorizontalFlip()] if horizontal_flip else []
        self.diffusion_transform = K.AugmentationSequential(
            *flip,
            K.RandomResizedCrop(
                (resolution, resolution), scale=(float(low), float(high)), ratio=(3.0 / 4.0, 4.0 / 3.0)
            ),
        )
        classifier_ops = list(flip)
        if classifier_crop_padding > 0:
            # Zero padding in [0, 1] is black, as in torchvision's RandomCrop(32, padding=4) that the authors use.
            classifier_ops.append(
                K.RandomCrop(
                    (resolution, resolution), padding=classifier_crop_padding, fill=0.0, padding_mode="constant"
                )
            )
        self.classifier_geometric = K.AugmentationSequential(*classifier_ops)
        self.randaugment = RandAugment(n=randaugment_n, m=randaugment_m) if randaugment_n > 0 else None
        # FixMatch's views start as the authors' unlabelled and labelled transforms do (configs
        # `standard_diffusion/continual_learning/diffmatch_pooling/*`): `RandomHorizontalFlip`, then
        # `RandomCrop(32, padding=4, padding_mode="reflect")`.
        fixmatch_ops = list(flip)
        if classifier_crop_padding > 0:
            fixmatch_ops.append(
                K.RandomCrop((resolution, resolution), padding=classifier_crop_padding, padding_mode="reflect")
            )
        self.fixmatch_geometric = K.AugmentationSequential(*fixmatch_ops) if fixmatch_ops else None
        self.fixmatch_randaugment = FixMatchRandAugment(n=2, m=10)

    def _check_input(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or images.ndim != 4:
            raise ValueError(
                f"images must be a tensor of shape [B, C, H, W], got {getattr(images, 'shape', type(images))}. "
                "Add a batch dimension with `images[None]`."
            )
        expected = (self.num_channels, self.resolution, self.resolution)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images have shape {tuple(images.shape)} but this augmentation was built for [B, {expected[0]}, "
                f"{expected[1]}, {expected[2]}]. Resize the images or build TwoViewAugmentation with matching "
                "resolution and num_channels."
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be floating point in [-1, 1], got {images.dtype}. Convert uint8 images with "
                "`images.float() / 127.5 - 1`."
            )

    def _cutout(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        half = self.cutout_size // 2
        centre_y = torch.randint(0, height, (batch, 1, 1), device=images.device)
        centre_x = torch.randint(0, width, (batch, 1, 1), device=images.device)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, width)
        inside = (
            (rows >= centre_y - half)
            & (rows < centre_y - half + self.cutout_size)
            & (cols >= centre_x - half)
            & (cols < centre_x - half + self.cutout_size)
        )
        return images.masked_fill(inside[:, None], 0.0)

    def _randaugment(self, images: torch.Tensor) -> torch.Tensor:
        gray = images.shape[1] == 1
        if gray:
            # kornia 0.9's RandAugment has a saturation op that rejects 1-channel input; on a gray image repeated to
            # RGB every op keeps the channels equal, so averaging them back loses nothing.
            images = images.expand(-1, 3, -1, -1).contiguous()
        out = torch.cat([self.randaugment(group) for group in images.split(self.randaugment_group_size)])
        return out.mean(dim=1, keepdim=True) if gray else out

    def diffusion_view(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: the diffusion view (flip + RandomResizedCrop), same shape and dtype, in [-1, 1].
        """
        self._check_input(images)
        out = self.diffusion_transform(images.float())
        return out.clamp(-1.0, 1.0).to(images.dtype)

    def classifier_view(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: the classifier view (flip + padded crop + RandAugment + Cutout), same shape and dtype, in
            [-1, 1].
        """
        self._check_input(images)
        # kornia's colour ops expect [0, 1].
        out = (images.float() + 1.0) / 2.0
        out = self.classifier_geometric(out)
        if self.randaugment is not None:
            out = self._randaugment(out)
        out = (out.clamp(0.0, 1.0) * 2.0 - 1.0).to(images.dtype)
        if self.cutout_size > 0:
            out = self._cutout(out)
        return out

    def weak_view(self, images: torch.Tensor) -> torch.Tensor:
        """
        FixMatch's weak view, whatever `enabled` says: a random horizontal flip (with `horizontal_flip`) and a random
        crop after reflect padding, as the authors' dataloader makes it for labelled images and for pseudo-labelling.

        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: the weak view, same shape and dtype, in [-1, 1].
        """
        self._check_input(images)
        if self.fixmatch_geometric is None:
            return images
        return self.fixmatch_geometric(images.float()).to(images.dtype)

    def strong_view(self, images: torch.Tensor) -> torch.Tensor:
        """
        FixMatch's strong view, whatever `enabled` says: a weak view of its own, then [`FixMatchRandAugment`] and
        Cutout (the authors' `RandAugmentMC`, whose Cutout is 16 pixels at 32x32).

        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: the strong view, same shape and dtype, in [-1, 1].
        """
        out = (self.weak_view(images).float() + 1.0) / 2.0
        out = self.fixmatch_randaugment(out)
        out = (out.clamp(0.0, 1.0) * 2.0 - 1.0).to(images.dtype)
        return self._cutout(out) if self.cutout_size > 0 else out

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: `(diffusion_view, classifier_view)`, both with the input's shape,
            dtype and device, in [-1, 1]. With `enabled=False` both are `images` itself.
        """
        if not self.enabled:
            return images, images
        return self.diffusion_view(images), self.classifier_view(images)
