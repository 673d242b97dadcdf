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
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks for it in this module)
from diffusers.models.unets.unet_2d import UNet2DModel, UNet2DOutput

from .classifier_head import JointClassifierHead
from .inputs import check_sample
from .modeling_outputs import JointUNet2DEncoderOutput, JointUNet2DOutput


class JointUNet2DModel(UNet2DModel):
    r"""
    A [`UNet2DModel`] that is also a classifier: the JDCL joint diffusion model.

    Every encoder feature map (the `conv_in` output, each down-block resnet/attention output, each downsampler output
    and the mid-block output) is global-average pooled, the pooled vectors are concatenated, and a small MLP head maps
    them to class logits. The classifier reads clean images at timestep 0. `model(sample, timestep).sample` is the
    plain [`UNet2DModel`] forward, bit for bit.

    Parameters:
        sample_size (`int` or `tuple[int, int]`, *optional*, defaults to `None`):
            Height and width of input/output sample. Dimensions must be a multiple of `2 ** (len(block_out_channels) -
            1)`. When set, [`~JointUNet2DModel.classify`] only accepts images of this size.
        in_channels (`int`, *optional*, defaults to 3): Number of channels in the input sample.
        out_channels (`int`, *optional*, defaults to 3): Number of channels in the output.
        center_input_sample (`bool`, *optional*, defaults to `False`): Whether to center the input sample.
        time_embedding_type (`str`, *optional*, defaults to `"positional"`): Type of time embedding to use.
        time_embedding_dim (`int`, *optional*, defaults to `None`):
            Size of the time embedding; `block_out_channels[0] * 4` when `None`.
        freq_shift (`int`, *optional*, defaults to 0): Frequency shift for Fourier time embedding.
        flip_sin_to_cos (`bool`, *optional*, defaults to `True`):
            Whether to flip sin to cos for Fourier time embedding.
        down_block_types (`tuple[str]`, *optional*, defaults to `("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")`):
            Tuple of downsample block types.
        mid_block_type (`str`, *optional*, defaults to `"UNetMidBlock2D"`):
            Block type for middle of UNet, it can be either `UNetMidBlock2D` or `None`.
        up_block_types (`tuple[str]`, *optional*, defaults to `("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")`):
            Tuple of upsample block types.
        block_out_channels (`tuple[int]`, *optional*, defaults to `(224, 448, 672, 896)`):
            Tuple of block output channels.
        layers_per_block (`int`, *optional*, defaults to `2`): The number of layers per block.
        mid_block_scale_factor (`float`, *optional*, defaults to `1`): The scale factor for the mid block.
        downsample_padding (`int`, *optional*, defaults to `1`): The padding for the downsample convolution.
        downsample_type (`str`, *optional*, defaults to `conv`):
            The downsample type for downsampling layers. Choose between "conv" and "resnet".
        upsample_type (`str`, *optional*, defaults to `conv`):
            The upsample type for upsampling layers. Choose between "conv" and "resnet".
        dropout (`float`, *optional*, defaults to 0.0): The dropout probability to use.
        act_fn (`str`, *optional*, defaults to `"silu"`): The activation function to use.
        attention_head_dim (`int`, *optional*, defaults to `8`): The attention head dimension.
        norm_num_groups (`int`, *optional*, defaults to `32`): The number of groups for normalization.
        attn_norm_num_groups (`int`, *optional*, defaults to `None`):
            If set to an integer, a group norm layer will be created in the mid block's attention layer with the given
            number of groups. JDCL's reference UNet has it; set it with `resnet_time_scale_shift="scale_shift"`.
        norm_eps (`float`, *optional*, defaults to `1e-5`): The epsilon for normalization.
        resnet_time_scale_shift (`str`, *optional*, defaults to `"default"`): Time scale shift config
            for ResNet blocks. Choose from `default` or `scale_shift`.
        add_attention (`bool`, *optional*, defaults to `True`): Whether the mid block has attention.
        class_embed_type (`str`, *optional*, defaults to `None`):
            The type of class embedding summed with the time embedding. Choose from `None`, `"timestep"`, or
            `"identity"`. JDCL needs none: class-conditional sampling is guided by the model's own classifier.
        num_class_embeds (`int`, *optional*, defaults to `None`):
            Input dimension of the learnable class embedding when `class_embed_type` is `None`.
        num_train_timesteps (`int`, *optional*, defaults to `None`): Needed by `time_embedding_type="learned"`.
        num_classes (`int`, *optional*, defaults to 10):
            Number of classes of the classifier head: every class of the continual run, from the first task on.
        classifier_hidden_dim (`int`, *optional*, defaults to 1024): Width of the classifier head's hidden layer.
        classifier_dropout (`float`, *optional*, defaults to 0.1): Dropout in the classifier head.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
        num_classes: int = 10,
        classifier_hidden_dim: int = 1024,
        classifier_dropout: float = 0.1,
    ):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
        if classifier_hidden_dim < 1:
            raise ValueError(f"`classifier_hidden_dim` must be a positive integer, got {classifier_hidden_dim!r}.")
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"`classifier_dropout` must be in [0, 1), got {classifier_dropout!r}.")
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            center_input_sample=center_input_sample,
            time_embedding_type=time_embedding_type,
            time_embedding_dim=time_embedding_dim,
            freq_shift=freq_shift,
            flip_sin_to_cos=flip_sin_to_cos,
            down_block_types=down_block_types,
            mid_block_type=mid_block_type,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            mid_block_scale_factor=mid_block_scale_factor,
            downsample_padding=downsample_padding,
            downsample_type=downsample_type,
            upsample_type=upsample_type,
            dropout=dropout,
            act_fn=act_fn,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            attn_norm_num_groups=attn_norm_num_groups,
            norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift,
            add_attention=add_attention,
            class_embed_type=class_embed_type,
            num_class_embeds=num_class_embeds,
            num_train_timesteps=num_train_timesteps,
        )
        self.classifier = JointClassifierHead(
            in_features=self.pooled_feature_dim,
            hidden_dim=classifier_hidden_dim,
            num_classes=num_classes,
            dropout=classifier_dropout,
        )

    @property
    def pooled_feature_dim(self) -> int:
        """Size of the concatenated, globally pooled encoder features that the classifier reads."""
        feature_dim = self.conv_in.out_channels
        for down_block in self.down_blocks:
            num_states = len(down_block.resnets)
            if getattr(down_block, "downsamplers", None) is not None:
                num_states += len(down_block.downsamplers)
            feature_dim += num_states * down_block.resnets[-1].out_channels
        if self.mid_block is not None:
            feature_dim += self.config.block_out_channels[-1]
        return feature_dim

    def _embed_timesteps(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, class_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif torch.is_tensor(timesteps) and len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)

        # broadcast to batch dimension in a way that's compatible with ONNX/Core ML
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)

        t_emb = self.time_proj(timesteps)
        # time_proj always returns float32 while time_embedding may run in half precision.
        t_emb = t_emb.to(dtype=self.dtype)
        emb = self.time_embedding(t_emb)

        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when doing class conditioning")
            if self.config.class_embed_type == "timestep":
                class_labels = self.time_proj(class_labels)
            class_emb = self.class_embedding(class_labels).to(dtype=self.dtype)
            emb = emb + class_emb
        elif self.class_embedding is None and class_labels is not None:
            raise ValueError("class_embedding needs to be initialized in order to use class conditioning")
        return emb, timesteps

    def encode(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
    ) -> JointUNet2DEncoderOutput:
        r"""
        Runs the encoder half of the UNet (time embedding, `conv_in`, down blocks, mid block).

        Args:
            sample (`torch.Tensor`): The input of shape `(batch, channel, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`): The timestep(s) of `sample`.
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                Labels for a model with a class embedding; must be `None` otherwise.

        Returns:
            [`JointUNet2DEncoderOutput`]: the mid-block output, the skip connections and the embedding.
        """
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        emb, timesteps = self._embed_timesteps(sample, timestep, class_labels)

        skip_sample = sample
        sample = self.conv_in(sample)

        down_block_res_samples = (sample,)
        for downsample_block in self.down_blocks:
            if hasattr(downsample_block, "skip_conv"):
                sample, res_samples, skip_sample = downsample_block(
                    hidden_states=sample, temb=emb, skip_sample=skip_sample
                )
            else:
                sample, res_samples = downsample_block(hidden_states=sample, temb=emb)
            down_block_res_samples += res_samples

        if self.mid_block is not None:
            sample = self.mid_block(sample, emb)

        has_skip_blocks = any(hasattr(block, "skip_conv") for block in self.down_blocks)
        return JointUNet2DEncoderOutput(
            hidden_states=sample,
            down_block_res_samples=down_block_res_samples,
            emb=emb,
            timesteps=timesteps,
            skip_sample=skip_sample if has_skip_blocks else None,
        )

    def decode(self, encoder_output: JointUNet2DEncoderOutput) -> torch.Tensor:
        r"""
        Runs the decoder half of the UNet (up blocks and output layers) on what [`~JointUNet2DModel.encode`] gave.

        Args:
            encoder_output ([`JointUNet2DEncoderOutput`]): The encoder's output for the same batch.

        Returns:
            `torch.Tensor`: the model output (the noise prediction), shaped like the input.
        """
        sample = encoder_output.hidden_states
        emb = encoder_output.emb
        down_block_res_samples = encoder_output.down_block_res_samples

        skip_sample = None
        for upsample_block in self.up_blocks:
            res_samples = down_block_res_samples[-len(upsample_block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(upsample_block.resnets)]

            if hasattr(upsample_block, "skip_conv"):
                sample, skip_sample = upsample_block(sample, res_samples, emb, skip_sample)
            else:
                sample = upsample_block(sample, res_samples, emb)

        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)

        if skip_sample is not None:
            sample += skip_sample

        if self.config.time_embedding_type == "fourier":
            timesteps = encoder_output.timesteps.reshape((sample.shape[0], *([1] * len(sample.shape[1:]))))
            sample = sample / timesteps
        return sample

    def decoder_modules(self) -> tuple[torch.nn.Module, ...]:
        """The modules that only [`~JointUNet2DModel.decode`] runs: what a classifier-only stage leaves untrained."""
        return (self.up_blocks, self.conv_norm_out, self.conv_act, self.conv_out)

    def pool_features(self, encoder_output: JointUNet2DEncoderOutput) -> torch.Tensor:
        r"""
        Global-average pools every encoder feature map and concatenates the results.

        Args:
            encoder_output ([`JointUNet2DEncoderOutput`]): The encoder's output.

        Returns:
            `torch.Tensor` of shape `(batch, pooled_feature_dim)`.
        """
        feature_maps = (*encoder_output.down_block_res_samples, encoder_output.hidden_states)
        if self.mid_block is None:
            feature_maps = encoder_output.down_block_res_samples
        return torch.cat([feature_map.mean(dim=(2, 3)) for feature_map in feature_maps], dim=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple:
        r"""
        The [`UNet2DModel`] forward: the noise prediction for `sample` at `timestep`, bit-identical to the parent's.

        Args:
            sample (`torch.Tensor`):
                The noisy input tensor with the following shape `(batch, channel, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`): The number of timesteps to denoise an input.
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                Optional class labels for a model with a class embedding.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return a [`~models.unets.unet_2d.UNet2DOutput`] instead of a plain tuple.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple`.
        """
        check_sample(self.config, sample, "sample", require_sample_size=False)
        encoder_output = self.encode(sample, timestep, class_labels)
        sample = self.decode(encoder_output)

        if not return_dict:
            return (sample,)
        return UNet2DOutput(sample=sample)

    def classify(self, images: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        r"""
        Class logits for clean images, read from the encoder at timestep 0; the decoder is not run.

        Args:
            images (`torch.Tensor`): Clean images in [-1, 1] of shape `(batch, channel, height, width)`.
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                Labels for a model with a class embedding; must be `None` otherwise.

        Returns:
            `torch.Tensor` of shape `(batch, num_classes)`: the logits over every class of the run.
        """
        check_sample(self.config, images, "images", require_sample_size=True)
        timesteps = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        encoder_output = self.encode(images, timesteps, class_labels)
        features = self.pool_features(encoder_output)
        return self.classifier(features)

    def joint_forward(
        self,
        noisy_sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        clean_sample: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> JointUNet2DOutput | tuple:
        r"""
        The noise prediction for `(noisy_sample, timestep)` and the logits for `clean_sample` at timestep 0, together.

        Both batches go through one encoder pass (concatenated along the batch axis; group norm and attention act per
        example, so nothing leaks between them) and only the noisy half goes through the decoder: a joint step costs
        about one and a half plain forwards instead of two.

        Args:
            noisy_sample (`torch.Tensor`): Noisy images `x_t` of shape `(batch, channel, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`): The timesteps of `noisy_sample`, one per example or one.
            clean_sample (`torch.Tensor`):
                Clean images `x_0` for the classifier, of shape `(batch_clean, channel, height, width)`; `batch_clean`
                may differ from `batch` (for example another augmented view, or a subset).
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                Labels for a model with a class embedding, used for both batches (which must then have the same size).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return a [`JointUNet2DOutput`] instead of a plain tuple.

        Returns:
            [`JointUNet2DOutput`] or `tuple`: the noise prediction and the logits.
        """
        check_sample(self.config, noisy_sample, "noisy_sample", require_sample_size=False)
        check_sample(self.config, clean_sample, "clean_sample", require_sample_size=True)
        if noisy_sample.shape[1:] != clean_sample.shape[1:]:
            raise ValueError(
                f"`noisy_sample` {tuple(noisy_sample.shape[1:])} and `clean_sample` {tuple(clean_sample.shape[1:])} "
                "must have the same channels and size to share one encoder pass."
            )
        batch_size = noisy_sample.shape[0]
        timesteps = timestep
        if not torch.is_tensor(timesteps) or timesteps.ndim == 0:
            timesteps = torch.as_tensor(timesteps, device=noisy_sample.device).reshape(1).expand(batch_size)
        clean_timesteps = torch.zeros(clean_sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        if class_labels is not None:
            if clean_sample.shape[0] != batch_size:
                raise ValueError(
                    "With `class_labels`, `noisy_sample` and `clean_sample` must have the same batch size."
                )
            class_labels = torch.cat([class_labels, class_labels], dim=0)

        encoder_output = self.encode(
            torch.cat([noisy_sample, clean_sample], dim=0), torch.cat([timesteps, clean_timesteps]), class_labels
        )
        noise_pred = self.decode(encoder_output.select(slice(None, batch_size)))
        logits = self.classifier(self.pool_features(encoder_output.select(slice(batch_size, None))))

        if not return_dict:
            return (noise_pred, logits)
        return JointUNet2DOutput(sample=noise_pred, logits=logits)
