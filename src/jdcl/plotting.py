# Copyright 2025 The JDCL Authors. All rights reserved.
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
"""Figures written after each task: the accuracy-matrix heatmap and the per-class sample grid."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from diffusers.utils import make_image_grid

from .atomic import atomic_file
from .metrics import AccuracyMatrix, lower_triangle


__all__ = ["make_class_grid", "plot_accuracy_matrix", "save_image_atomically"]

# Tiny images (8x8 digits, 16x16 prototypes) are unreadable at native size; cells are upscaled to at least this.
_MIN_CELL_SIZE = 32
_BLANK_VALUE = 255


def _image_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        raise ValueError(f"Cannot tell the image format of {str(path)!r}; give the path an extension such as `.png`.")
    return {"jpg": "jpeg"}.get(suffix, suffix)


def save_image_atomically(image: PIL.Image.Image, path: str | os.PathLike) -> None:
    """
    Saves a PIL image so that `path` only ever holds a complete file (temporary file + `os.replace`).

    Args:
        image (`PIL.Image.Image`):
            The image to save.
        path (`str` or `os.PathLike`):
            Destination file; its extension picks the format (e.g. `.png`). Missing parent folders are created.
    """
    if not isinstance(image, PIL.Image.Image):
        raise ValueError(f"`image` must be a `PIL.Image.Image`, got {type(image).__name__}.")
    image_format = _image_format(path)
    with atomic_file(path) as temporary:
        image.save(temporary, format=image_format.upper())


def _accuracy_array(accuracy_matrix: Any) -> np.ndarray:
    """Turns a partially filled accuracy matrix into a float array with NaN wherever `j > i`."""
    num_columns = accuracy_matrix.num_tasks if isinstance(accuracy_matrix, AccuracyMatrix) else 0
    rows = lower_triangle(accuracy_matrix)
    array = np.full((len(rows), max(num_columns, len(rows))), np.nan)
    for i, row in enumerate(rows):
        array[i, : i + 1] = row
    return array


def plot_accuracy_matrix(
    accuracy_matrix: Any,
    path: str | os.PathLike,
    task_names: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """
    Draws the accuracy matrix as an annotated heatmap and writes it atomically to `path`.

    Rows are "after task i", columns "task j"; cells with `j > i` (tasks not trained yet) are left blank.

    Args:
        accuracy_matrix (`list[list[float | None]]`, `np.ndarray`, `torch.Tensor` or [`~jdcl.metrics.AccuracyMatrix`]):
            Row `i` holds the accuracies after training task `i`; entries with `j > i` are ignored. Accuracies in
            `[0, 1]` use a 0-1 colour scale, larger values are taken as percentages (0-100).
        path (`str` or `os.PathLike`):
            Destination file; its extension picks the format (e.g. `.png`, `.pdf`).
        task_names (`Sequence[str]`, *optional*, defaults to `None`):
            One name per column (task); defaults to `"task 1"`, `"task 2"`, ...
        title (`str`, *optional*, defaults to `None`):
            Figure title; defaults to `"Accuracy after each task"`.
    """
    # An Agg canvas on a bare Figure, not pyplot: no display needed, and the caller's pyplot backend and figure
    # list stay untouched (safe in notebooks and in training loops).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    array = _accuracy_array(accuracy_matrix)
    num_rows, num_columns = array.shape
    if task_names is None:
        task_names = [f"task {j + 1}" for j in range(num_columns)]
    elif len(task_names) < num_columns:
        raise ValueError(
            f"`task_names` has {len(task_names)} names but the matrix has {num_columns} tasks; pass one name per task."
        )
    image_format = _image_format(path)
    finite = array[np.isfinite(array)]
    vmax = 100.0 if finite.size and finite.max() > 1.0 else 1.0

    size = 1.0 + 0.8 * num_columns
    figure = Figure(figsize=(size + 1.5, 1.0 + 0.8 * num_rows + 0.5))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    image = axis.imshow(np.ma.masked_invalid(array), cmap="viridis", vmin=0.0, vmax=vmax, aspect="equal")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="accuracy")
    for i in range(num_rows):
        for j in range(min(i + 1, num_columns)):
            value = array[i, j]
            text = "n/a" if math.isnan(value) else (f"{value:.1f}" if vmax > 1.0 else f"{value:.2f}")
            # Dark text on the bright end of viridis, light text elsewhere, so every number stays readable.
            bright = not math.isnan(value) and value / vmax > 0.6
            axis.text(j, i, text, ha="center", va="center", color="black" if bright else "white", fontsize=9)
    axis.set_xticks(range(num_columns), labels=list(task_names[:num_columns]), rotation=45, ha="right")
    axis.set_yticks(range(num_rows), labels=[f"after {task_names[i]}" for i in range(num_rows)])
    axis.set_xlabel("evaluated on")
    axis.set_ylabel("trained up to")
    axis.set_title(title if title is not None else "Accuracy after each task")
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format=image_format, dpi=100)


def _to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] `[N, C, H, W]` tensors to `[N, H, W, 3]` uint8, grey images repeated over the colour channels."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images.permute(0, 2, 3, 1).numpy()


def make_class_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[int],
    class_names: Sequence[str] | None = None,
    samples_per_class: int = 8,
) -> PIL.Image.Image:
    """
    Arranges samples in a grid with one row per class.

    Row `r` holds up to `samples_per_class` images whose label is `classes[r]`, in the order they appear in
    `images`; missing cells (a class with fewer samples, or none) are left white. Images smaller than 32 pixels are
    upscaled with nearest-neighbour interpolation by an integer factor so that pixels stay crisp.

    Args:
        images (`torch.Tensor`):
            Images in `[-1, 1]`, shape `[N, C, H, W]` with `C` 1 or 3.
        labels (`torch.Tensor`):
            Class index of every image, shape `[N]`.
        classes (`Sequence[int]`):
            The classes to show, one row each, top to bottom.
        class_names (`Sequence[str]`, *optional*, defaults to `None`):
            Names of all classes, indexed by class index. When given, a column on the left shows the name of each
            row's class.
        samples_per_class (`int`, *optional*, defaults to 8):
            Number of image columns.

    Returns:
        `PIL.Image.Image`: An RGB image of `len(classes)` rows and `samples_per_class` image columns (plus the name
        column when `class_names` is given).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a `[N, C, H, W]` tensor with C = 1 or 3, got {shape}.")
    labels = torch.as_tensor(labels).flatten().cpu()
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"`labels` has {labels.shape[0]} entries but `images` has {images.shape[0]}; pass one label per image."
        )
    if len(classes) == 0:
        raise ValueError("`classes` is empty; pass at least one class to show.")
    if not isinstance(samples_per_class, int) or samples_per_class < 1:
        raise ValueError(f"`samples_per_class` must be a positive integer, got {samples_per_class!r}.")
    if class_names is not None:
        missing = [c for c in classes if not 0 <= int(c) < len(class_names)]
        if missing:
            raise ValueError(
                f"`class_names` has {len(class_names)} names, none for classes {missing}; "
                "pass the names of all classes, indexed by class index."
            )

    height, width = images.shape[-2:]
    scale = max(1, math.ceil(_MIN_CELL_SIZE / min(height, width)))
    cell_height, cell_width = height * scale, width * scale
    pixels = _to_uint8_hwc(images)
    blank = PIL.Image.new("RGB", (cell_width, cell_height), (_BLANK_VALUE,) * 3)

    cells = []
    for class_index in classes:
        indices = torch.nonzero(labels == int(class_index)).flatten()[:samples_per_class].tolist()
        for k in range(samples_per_class):
            if k < len(indices):
                cell = PIL.Image.fromarray(pixels[indices[k]])
                cells.append(cell.resize((cell_width, cell_height), PIL.Image.Resampling.NEAREST))
            else:
                cells.append(blank)
    grid = make_image_grid(cells, rows=len(classes), cols=samples_per_class)
    if class_names is None:
        return grid

    names = [str(class_names[int(c)]) for c in classes]
    draw = PIL.ImageDraw.Draw(grid)
    text_width = max(draw.textlength(name) for name in names)
    label_width = int(math.ceil(text_width)) + 8
    canvas = PIL.Image.new("RGB", (label_width + grid.width, grid.height), (_BLANK_VALUE,) * 3)
    canvas.paste(grid, (label_width, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    for row, name in enumerate(names):
        draw.text((4, row * cell_height + cell_height // 2), name, fill=(0, 0, 0), anchor="lm")
    return canvas
