"""The paper's two augmented views, computed batched on the images' device with kornia."""

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment


class TwoViewAugmentation(torch.nn.Module):
    """
    Produces the two views JDCL trains on: a mild one for the diffusion loss and a strong one for the classifier.

    View 0 (diffusion): random horizontal flip, then `RandomResizedCrop` (scale `diffusion_crop_scale`, aspect ratio
    3/4..4/3) back to `resolution`. View 1 (classifier): random horizontal flip, random crop after zero padding,
    `RandAugment(randaugment_n, randaugment_m)`, then Cutout.

    Both views are drawn from torch's global random generator, so they are reproducible under `torch.manual_seed`.

    Args:
        resolution (`int`):
            Side of the square input and output images.
        num_channels (`int`):
            1 or 3.
        diffusion_crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.85, 1.0)`):
            Range of the area fraction kept by the diffusion view's `RandomResizedCrop`.
        classifier_crop_padding (`int`, *optional*, defaults to `None`):
            Zero padding of the classifier view's random crop; `None` means `resolution // 8` (4 at 32x32, as in
            the paper's CIFAR setting).
        randaugment_n (`int`, *optional*, defaults to 2):
            Number of RandAugment operations applied to each image.
        randaugment_m (`int`, *optional*, defaults to 10):
            RandAugment magnitude, on kornia's 0..30 scale.
        cutout_size (`int`, *optional*, defaults to `None`):
            Side of the Cutout square; `None` means `resolution // 2`, 0 disables Cutout. As in DeVries & Taylor's
            Cutout (applied after normalisation there), the square is set to 0 in [-1, 1], i.e. mid-gray, and its
            centre is uniform over the image so that it may be clipped at the border.
        randaugment_group_size (`int`, *optional*, defaults to 8):
            kornia's RandAugment draws its operations once per call, for the whole batch; the batch is therefore cut
            into groups of this many images, each with its own operations. 1 gives per-image operations like
            torchvision (and the authors' code) but costs a call per image (about 65 ms for 64 images on 2 CPU
            cores, against about 9 ms with groups of 8).
        enabled (`bool`, *optional*, defaults to `True`):
            If `False`, both views are the input tensor itself.
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
        self.enabled = enabled

        self.diffusion_transform = K.AugmentationSequential(
            K.RandomHorizontalFlip(),
            K.RandomResizedCrop(
                (resolution, resolution), scale=(float(low), float(high)), ratio=(3.0 / 4.0, 4.0 / 3.0)
            ),
        )
        classifier_ops = [K.RandomHorizontalFlip()]
        if classifier_crop_padding > 0:
            # Zero padding in [0, 1] is black, as in torchvision's RandomCrop(32, padding=4) that the authors use.
            classifier_ops.append(
                K.RandomCrop(
                    (resolution, resolution), padding=classifier_crop_padding, fill=0.0, padding_mode="constant"
                )
            )
        self.classifier_geometric = K.AugmentationSequential(*classifier_ops)
        self.randaugment = RandAugment(n=randaugment_n, m=randaugment_m) if randaugment_n > 0 else None
        # The weak view of FixMatch's pseudo-labelling, as the authors' semi-supervised code has it: a random
        # translation of up to 12.5% of the side.
        self.weak_transform = K.RandomAffine(degrees=0.0, translate=(0.125, 0.125), p=1.0, padding_mode="border")

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
        FixMatch's weak view, whatever `enabled` says: a random translation of up to 12.5% of the side.

        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.
        """
        self._check_input(images)
        return self.weak_transform(images.float()).clamp(-1.0, 1.0).to(images.dtype)

    def strong_view(self, images: torch.Tensor) -> torch.Tensor:
        """
        FixMatch's strong view, whatever `enabled` says: RandAugment, then Cutout.

        Args:
            images (`torch.Tensor`): Float images in [-1, 1], shape `[B, C, H, W]`.
        """
        self._check_input(images)
        out = (images.float() + 1.0) / 2.0
        if self.randaugment is not None:
            out = self._randaugment(out)
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
