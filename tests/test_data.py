import logging
import os

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from jdcl.data import BUNDLED_DATASET_NAME, ClassificationData, load_bundled_digits, load_classification_dataset
from jdcl.tensor_data import TensorData, images_to_tensor, infer_num_channels, prepare_tensors


MNIST_10K = "/work/shared/data/mnist-10k"


def _gray_image(value: int, size: int = 6) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.full((size, size), value, dtype=np.uint8))


def _tiny_dict(num_per_class: int = 4, num_classes: int = 3, label_feature=None) -> datasets.DatasetDict:
    labels = [c for c in range(num_classes) for _ in range(num_per_class)]
    images = [_gray_image(40 * c + i) for i, c in enumerate(labels)]
    label_feature = label_feature or datasets.ClassLabel(names=[f"c{i}" for i in range(num_classes)])
    features = datasets.Features({"img": datasets.Image(), "target": label_feature})
    train = datasets.Dataset.from_dict({"img": images, "target": labels}, features=features)
    return datasets.DatasetDict({"train": train, "test": train.select(range(0, len(labels), 2))})


@pytest.fixture(scope="module")
def digits():
    return load_bundled_digits()


def test_bundled_digits_shapes_and_stratified_split(digits):
    assert set(digits.keys()) == {"train", "test"}
    assert len(digits["train"]) + len(digits["test"]) == 1797
    assert abs(len(digits["test"]) / 1797 - 0.2) < 0.01
    assert isinstance(digits["train"].features["image"], datasets.Image)
    assert digits["train"].features["label"].names == [str(i) for i in range(10)]
    image = digits["train"][0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    pixels = np.stack([np.asarray(img) for img in digits["train"][:200]["image"]])
    assert pixels.max() == 255 and pixels.min() == 0

    train_counts = np.bincount(np.asarray(digits["train"]["label"]), minlength=10)
    test_counts = np.bincount(np.asarray(digits["test"]["label"]), minlength=10)
    # Stratified: each class keeps its ~20% share in test.
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.02)


def test_bundled_digits_is_deterministic(digits):
    again = load_bundled_digits()
    assert list(again["test"]["label"]) == list(digits["test"]["label"])
    np.testing.assert_array_equal(np.asarray(again["test"][5]["image"]), np.asarray(digits["test"][5]["image"]))


def test_default_loads_bundled_digits():
    data = load_classification_dataset()
    assert isinstance(data, ClassificationData)
    assert data.num_classes == 10 and data.class_names[3] == "3"
    assert (data.image_column, data.label_column) == ("image", "label")
    assert len(data.test) == 360
    assert len(load_classification_dataset(BUNDLED_DATASET_NAME).train) == len(data.train)


def test_save_to_disk_folder_and_column_detection(tmp_path):
    _tiny_dict().save_to_disk(str(tmp_path / "tiny"))
    data = load_classification_dataset(str(tmp_path / "tiny"))
    assert (data.image_column, data.label_column) == ("img", "target")
    assert data.class_names == ["c0", "c1", "c2"]
    assert len(data.train) == 12 and len(data.test) == 6


def test_single_saved_dataset_carves_stratified_test_split(tmp_path, caplog):
    _tiny_dict(num_per_class=10)["train"].save_to_disk(str(tmp_path / "single"))
    with caplog.at_level(logging.WARNING, logger="jdcl.data"):
        data = load_classification_dataset(str(tmp_path / "single"), validation_fraction=0.3, seed=1)
    assert "holding out" in caplog.text
    assert len(data.train) == 21 and len(data.test) == 9
    assert np.bincount(np.asarray(data.test["target"])).tolist() == [3, 3, 3]
    again = load_classification_dataset(str(tmp_path / "single"), validation_fraction=0.3, seed=1)
    assert list(again.test["target"]) == list(data.test["target"])
    assert [np.asarray(i).mean() for i in again.test["img"]] == [np.asarray(i).mean() for i in data.test["img"]]


def test_int_label_column_without_classlabel(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"picture": [_gray_image(i) for i in range(6)], "labels": [0, 1, 2, 0, 1, 2], "other": [9] * 6},
        features=datasets.Features(
            {"picture": datasets.Image(), "labels": datasets.Value("int32"), "other": datasets.Value("int64")}
        ),
    )
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "ints"))
    data = load_classification_dataset(str(tmp_path / "ints"))
    assert data.label_column == "labels"
    assert data.class_names == ["0", "1", "2"]
    assert len(data.test) == 6


def test_imagefolder(tmp_path):
    for name, value in (("cat", 10), ("dog", 200)):
        folder = tmp_path / "imgs" / name
        folder.mkdir(parents=True)
        for i in range(3):
            PIL.Image.fromarray(np.full((5, 7, 3), value + i, dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_classification_dataset(train_data_dir=str(tmp_path / "imgs"), validation_fraction=0.3)
    assert data.class_names == ["cat", "dog"]
    assert len(data.train) + len(data.test) == 6 and len(data.test) == 2
    assert infer_num_channels(data.train, data.image_column) == 3
    tensors = prepare_tensors(data.train, data.image_column, data.label_column, 4, 3, show_progress=False)
    # Every "cat" image is darker than every "dog" image, so labels and pixels stayed aligned.
    means = tensors.images.float().mean(dim=(1, 2, 3))
    assert (means[tensors.labels == 0] < 100).all() and (means[tensors.labels == 1] > 100).all()


def test_missing_columns_and_splits_raise(tmp_path):
    _tiny_dict().save_to_disk(str(tmp_path / "tiny"))
    path = str(tmp_path / "tiny")
    with pytest.raises(ValueError, match=r"Column 'image' not found.*\['img', 'target'\].*--image_column"):
        load_classification_dataset(path, image_column="image")
    with pytest.raises(ValueError, match=r"Column 'label' not found.*--label_column"):
        load_classification_dataset(path, label_column="label")
    with pytest.raises(ValueError, match=r"Split 'dev' not found.*--test_split"):
        load_classification_dataset(path, test_split="dev")
    with pytest.raises(ValueError, match="Pass only one of"):
        load_classification_dataset(path, train_data_dir=path)


def test_undetectable_columns_raise(tmp_path):
    ds = datasets.Dataset.from_dict({"pixels": [[1, 2]] * 4, "y": ["a", "b", "a", "b"]})
    ds.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match=r"Could not find an image column.*\['pixels', 'y'\].*--image_column"):
        load_classification_dataset(str(tmp_path / "plain"))

    ds = datasets.Dataset.from_dict(
        {"img": [_gray_image(1)] * 4, "y": ["a", "b", "a", "b"]},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "strlabels"))
    with pytest.raises(ValueError, match=r"Could not find a label column.*--label_column"):
        load_classification_dataset(str(tmp_path / "strlabels"))
    with pytest.raises(ValueError, match="class_encode_column"):
        load_classification_dataset(str(tmp_path / "strlabels"), label_column="y")


def test_labels_out_of_range_raise(tmp_path):
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"img": [_gray_image(i) for i in range(4)], "label": [0, 1, 5, 1]}, features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "gap"))
    with pytest.raises(ValueError, match=r"labels outside \[0, 3\): \[5\]"):
        load_classification_dataset(str(tmp_path / "gap"))

    neg = _tiny_dict()
    neg["train"] = (
        neg["train"]
        .cast_column("target", datasets.Value("int64"))
        .map(lambda row, i: {"target": -1 if i == 0 else row["target"]}, with_indices=True)
    )
    neg["test"] = neg["test"].cast_column("target", datasets.Value("int64"))
    neg.save_to_disk(str(tmp_path / "neg"))
    with pytest.raises(ValueError, match=r"labels outside.*\[-1\]"):
        load_classification_dataset(str(tmp_path / "neg"), label_column="target")


def test_empty_train_split_raises(tmp_path, monkeypatch):
    _tiny_dict().save_to_disk(str(tmp_path / "tiny"))
    empty = _tiny_dict()
    empty["train"] = empty["train"].select([])
    # datasets 5.2 cannot reload an empty split written by save_to_disk, so hand the loader the in-memory one.
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: empty)
    with pytest.raises(ValueError, match="'train' split is empty"):
        load_classification_dataset(str(tmp_path / "tiny"))


def test_images_to_tensor_sizes_channels_and_range():
    rgb = PIL.Image.fromarray(np.stack([np.full((10, 6), v, dtype=np.uint8) for v in (0, 128, 255)], axis=-1))
    gray = _gray_image(77, size=3)
    out = images_to_tensor([rgb, gray], resolution=5, num_channels=3)
    assert out.shape == (2, 3, 5, 5) and out.dtype == torch.uint8
    assert out[0, :, 2, 2].tolist() == [0, 128, 255]
    assert (out[1] == 77).all()
    out = images_to_tensor([rgb, gray], resolution=4, num_channels=1)
    assert out.shape == (2, 1, 4, 4)
    # PIL's L conversion: 0.299 R + 0.587 G + 0.114 B.
    assert abs(int(out[0, 0, 1, 1]) - round(0.587 * 128 + 0.114 * 255)) <= 1

    checker = PIL.Image.fromarray((np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8))
    down = images_to_tensor([checker], resolution=4, num_channels=1)
    # Antialiased downsampling averages the checkerboard to gray instead of picking pixels.
    assert ((down.float() - 127.5).abs() < 20).all()
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        images_to_tensor([gray], resolution=4, num_channels=2)


def test_prepare_tensors_and_subset(digits):
    tensors = prepare_tensors(digits["test"], "image", "label", resolution=16, num_channels=1, batch_size=100)
    assert tensors.images.shape == (360, 1, 16, 16) and tensors.images.dtype == torch.uint8
    assert tensors.labels.dtype == torch.int64 and len(tensors) == 360
    assert tensors.labels.tolist() == list(digits["test"]["label"])
    direct = images_to_tensor([digits["test"][123]["image"]], 16, 1)
    assert torch.equal(tensors.images[123], direct[0])

    floats = tensors.to_float()
    assert floats.dtype == torch.float32 and floats.min() == -1.0 and floats.max() == 1.0

    sub = tensors.subset([2, 7])
    assert set(sub.labels.tolist()) == {2, 7}
    assert len(sub) == int(((tensors.labels == 2) | (tensors.labels == 7)).sum())
    with pytest.raises(ValueError, match=r"has a label in \[11\].*--class_order"):
        tensors.subset([11])


def test_tensor_data_validates():
    with pytest.raises(ValueError, match="uint8"):
        TensorData(images=torch.zeros(2, 1, 4, 4), labels=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        TensorData(images=torch.zeros(2, 1, 4, 4, dtype=torch.uint8), labels=torch.zeros(3, dtype=torch.int64))


def test_infer_num_channels(digits):
    assert infer_num_channels(digits["train"], "image") == 1
    with pytest.raises(ValueError, match="--image_column"):
        infer_num_channels(digits["train"], "img")
    with pytest.raises(ValueError, match="empty split"):
        infer_num_channels(digits["train"].select([]), "image")


@pytest.mark.skipif(not os.path.isdir(MNIST_10K), reason="the shared mnist-10k folder is not on this machine")
def test_mnist_10k_folder():
    data = load_classification_dataset(MNIST_10K)
    assert data.num_classes == 10
    assert len(data.train) == 8004 and len(data.test) == 1996
    assert infer_num_channels(data.train, data.image_column) == 1
    assert data.train[0][data.image_column].size == (28, 28)
    tensors = prepare_tensors(data.test.select(range(50)), data.image_column, data.label_column, 16, 1)
    assert tensors.images.shape == (50, 1, 16, 16)
