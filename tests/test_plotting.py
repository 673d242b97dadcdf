import os

import numpy as np
import PIL.Image
import pytest
import torch

from jdcl.metrics import AccuracyMatrix
from jdcl.plotting import make_class_grid, plot_accuracy_matrix, save_image_atomically


def _images_and_labels():
    # Image n is uniformly filled with value n / 10 - 1 so that each cell can be traced back to its source image.
    labels = torch.tensor([0, 1, 0, 2, 0, 1])
    images = torch.stack([torch.full((1, 8, 8), n / 10 - 1) for n in range(len(labels))])
    return images, labels


def _pixel(value: float) -> int:
    return round((value + 1) * 127.5)


def test_class_grid_layout_upscaling_and_blank_cells():
    images, labels = _images_and_labels()
    grid = make_class_grid(images, labels, classes=[0, 1, 3], samples_per_class=2)
    # 8 px images are upscaled x4 to 32 px cells: 3 class rows, 2 sample columns.
    assert grid.size == (2 * 32, 3 * 32)
    array = np.asarray(grid)
    assert array.shape == (96, 64, 3)
    # Row of class 0: images 0 and 2 (image 4 is beyond samples_per_class).
    assert (array[0:32, 0:32] == _pixel(-1.0)).all()
    assert (array[0:32, 32:64] == _pixel(0.2 - 1)).all()
    # Row of class 1: images 1 and 5.
    assert (array[32:64, 32:64] == _pixel(0.5 - 1)).all()
    # Class 3 has no sample: both cells are blank (white).
    assert (array[64:96] == 255).all()


def test_class_grid_blank_when_class_has_fewer_samples_and_rgb_input():
    images = torch.ones(3, 3, 40, 40) * torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    grid = make_class_grid(images, torch.tensor([2, 2, 5]), classes=[2, 5], samples_per_class=3)
    # 40 px is already large enough: no upscaling.
    assert grid.size == (3 * 40, 2 * 40)
    array = np.asarray(grid)
    assert (array[0:40, 0:80] == [255, 0, 0]).all()
    assert (array[0:40, 80:120] == 255).all()
    assert (array[40:80, 40:120] == 255).all()


def test_class_grid_label_column_widens_the_image():
    images, labels = _images_and_labels()
    plain = make_class_grid(images, labels, classes=[0, 1], samples_per_class=3)
    named = make_class_grid(images, labels, classes=[0, 1], class_names=["zero", "one", "two"], samples_per_class=3)
    assert named.height == plain.height
    assert named.width > plain.width
    # The image cells sit unchanged to the right of the label column.
    assert np.array_equal(np.asarray(named)[:, named.width - plain.width :], np.asarray(plain))
    # The label column holds dark text pixels.
    assert (np.asarray(named)[:, : named.width - plain.width] < 128).any()


def test_class_grid_rejects_bad_input():
    images, labels = _images_and_labels()
    with pytest.raises(ValueError, match="C = 1 or 3"):
        make_class_grid(images.repeat(1, 2, 1, 1), labels, [0])
    with pytest.raises(ValueError, match="one label per image"):
        make_class_grid(images, labels[:2], [0])
    with pytest.raises(ValueError, match="none for classes"):
        make_class_grid(images, labels, [0, 7], class_names=["zero"])


def test_save_image_atomically_writes_png_and_leaves_no_temporary_files(tmp_path):
    images, labels = _images_and_labels()
    grid = make_class_grid(images, labels, classes=[0, 1, 2], samples_per_class=4)
    path = tmp_path / "sub" / "samples.png"
    save_image_atomically(grid, path)
    with PIL.Image.open(path) as reopened:
        assert reopened.format == "PNG"
        assert reopened.size == (4 * 32, 3 * 32)
        assert np.array_equal(np.asarray(reopened.convert("RGB")), np.asarray(grid))
    assert os.listdir(path.parent) == ["samples.png"]
    with pytest.raises(ValueError, match="extension"):
        save_image_atomically(grid, tmp_path / "samples")


@pytest.mark.parametrize(
    "matrix",
    [[[0.9], [0.6, 0.8]], [[0.9, None, None], [0.6, 0.8, None]], AccuracyMatrix(3, [[0.9], [0.6, 0.8]])],
)
def test_plot_accuracy_matrix_writes_png(tmp_path, matrix):
    path = tmp_path / "accuracy_matrix.png"
    plot_accuracy_matrix(matrix, path, title="CIFAR-10 / 5")
    with PIL.Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
    assert os.listdir(tmp_path) == ["accuracy_matrix.png"]


def test_plot_accuracy_matrix_overwrites_and_validates(tmp_path):
    path = tmp_path / "matrix.png"
    path.write_bytes(b"old")
    plot_accuracy_matrix(np.array([[80.0, np.nan], [70.0, 90.0]]), path, task_names=["airplane", "bird"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one name per task"):
        plot_accuracy_matrix([[0.9], [0.6, 0.8]], path, task_names=["a"])
    with pytest.raises(ValueError, match="ragged"):
        plot_accuracy_matrix([[0.9], [0.6]], path)
