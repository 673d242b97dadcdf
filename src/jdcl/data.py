"""Loading image-classification data sets, checked before any training (converted to tensors by `tensor_data.py`).

Every data set goes through `datasets`: a Hub name, a local folder that `datasets.load_dataset` understands, a folder
written with `Dataset.save_to_disk`/`DatasetDict.save_to_disk`, an image folder, or the small bundled digits set that
needs no network.
"""

import io
import logging
import math
import os
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image

from .paths import check_writable_folder


logger = logging.getLogger(__name__)

BUNDLED_DATASET_NAME = "digits"

_LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "class")


def load_bundled_digits() -> datasets.DatasetDict:
    """
    Builds the bundled digits data set (scikit-learn's 1,797 8x8 handwritten digits) in memory, with no network.

    The 0..16 pixel values are rescaled to 0..255 and stored as 8x8 grayscale PIL images. The split into "train" and
    "test" is stratified by class, 20% test, with a fixed seed, so it is the same on every machine.

    Returns:
        `datasets.DatasetDict`: splits "train" and "test", columns "image" (`datasets.Image`) and "label"
        (`datasets.ClassLabel` with names "0".."9").
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    targets = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=0.2, stratify=targets, random_state=0, shuffle=True
    )
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )

    def build(indices: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "image": [PIL.Image.fromarray(pixels[i]) for i in indices],
                "label": [int(targets[i]) for i in indices],
            },
            features=features,
        )

    return datasets.DatasetDict({"train": build(np.sort(train_idx)), "test": build(np.sort(test_idx))})


@dataclass
class ClassificationData:
    """
    A train and a test split of an image-classification data set, with the columns and class names resolved.

    Args:
        train (`datasets.Dataset`): The training split.
        test (`datasets.Dataset`): The split used for evaluation.
        image_column (`str`): Name of the column holding the images.
        label_column (`str`): Name of the column holding integer class indices in `[0, num_classes)`.
        class_names (`list[str]`): Name of every class, indexed by label.
    """

    train: datasets.Dataset
    test: datasets.Dataset
    image_column: str
    label_column: str
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """`int`: Number of classes of the data set's label space."""
        return len(self.class_names)


def _is_save_to_disk_folder(path: str) -> bool:
    # `load_dataset` does not read the Arrow layout written by `save_to_disk`; `load_from_disk` does.
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, datasets.config.DATASETDICT_JSON_FILENAME))
        or os.path.isfile(os.path.join(path, datasets.config.DATASET_STATE_JSON_FILENAME))
    )


def _find_image_column(features: datasets.Features, image_column: str | None) -> str:
    available = list(features.keys())
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"Column '{image_column}' not found; available columns: {available}. "
                "Pass --image_column with one of them."
            )
        if not isinstance(features[image_column], datasets.Image):
            image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
            raise ValueError(
                f"--image_column '{image_column}' holds {features[image_column]!r}, not images (a `datasets.Image` "
                f"feature). Pass --image_column with an image column{f': one of {image_columns}' if image_columns else ''}."
            )
        return image_column
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(
        f"Could not find an image column (a feature of type `datasets.Image`); available columns: {available}. "
        "Pass --image_column with the column that holds the images."
    )


def _is_int_feature(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _find_label_column(features: datasets.Features, label_column: str | None) -> str:
    available = list(features.keys())
    if label_column is not None:
        if label_column not in features:
            raise ValueError(
                f"Column '{label_column}' not found; available columns: {available}. "
                "Pass --label_column with one of them."
            )
        feature = features[label_column]
        if not isinstance(feature, datasets.ClassLabel) and not _is_int_feature(feature):
            raise ValueError(
                f"Label column '{label_column}' has type {feature!r}, but labels must be a `datasets.ClassLabel` or "
                "integer class indices. Encode it first (e.g. `dataset.class_encode_column(...)`) or pass "
                "--label_column with an integer column."
            )
        return label_column
    for name, feature in features.items():
        if isinstance(feature, datasets.ClassLabel):
            return name
    for name in _LABEL_COLUMN_CANDIDATES:
        if name in features and _is_int_feature(features[name]):
            return name
    for name in _LABEL_COLUMN_CANDIDATES:
        if name in features:
            raise ValueError(
                f"Column '{name}' looks like the labels but holds {features[name]!r}, not class indices. Encode it "
                f"first (`dataset.class_encode_column('{name}')` makes a `ClassLabel` of its values), or pass "
                "--label_column with an integer column."
            )
    raise ValueError(
        "Could not find a label column (a `datasets.ClassLabel` feature, or an integer column named one of "
        f"{list(_LABEL_COLUMN_CANDIDATES)}); available columns: {available}. Pass --label_column with the column "
        "that holds the class indices."
    )


def labels_of(dataset: datasets.Dataset, label_column: str) -> np.ndarray:
    """The class index of every example of `dataset`, as int64."""
    return np.asarray(dataset.with_format("numpy")[label_column], dtype=np.int64)


def _carve_test_split(
    train: datasets.Dataset, label_column: str, fraction: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    from sklearn.model_selection import train_test_split

    labels = labels_of(train, label_column)
    indices = np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            f"Class(es) {classes[counts < 2].tolist()} have a single training example, so no test example can be held "
            "out for them (the data set has no 'test' or 'validation' split). Add examples of those classes, or pass "
            "--test_split with a split of its own."
        )
    # Stratifying needs at least two examples per class; tiny data sets fall back to a plain random split.
    num_test = math.ceil(fraction * len(labels))
    stratify = labels if counts.min() >= 2 and min(num_test, len(labels) - num_test) >= len(counts) else None
    train_idx, test_idx = train_test_split(indices, test_size=fraction, stratify=stratify, random_state=seed)
    lost = sorted(set(classes.tolist()) - set(labels[train_idx].tolist()))
    if lost:
        raise ValueError(
            f"Holding out a test split would leave class(es) {lost} with no training example: the data set is too "
            "small to carve a test split from. Add examples, or pass --test_split with a split of its own."
        )
    return train.select(np.sort(train_idx)), train.select(np.sort(test_idx))


def find_unreadable_images(dataset: datasets.Dataset, image_column: str) -> list[tuple[int, str]]:
    r"""
    Decodes every image of a split once and lists those that do not decode (empty, cut short, not an image).

    Args:
        dataset (`datasets.Dataset`): The split.
        image_column (`str`): Its image column.

    Returns:
        `list[tuple[int, str]]`: the row and a description (the file and why) of every unreadable image.
    """
    unreadable = []
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    for index, item in enumerate(raw[image_column]):
        source = item.get("path") or f"row {index}"
        try:
            with PIL.Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as image:
                image.load()
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
            unreadable.append((index, f"{source} ({error})"))
    return unreadable


def _without_unreadable_images(
    raw: datasets.DatasetDict, image_column: str, folder: str, skip_bad_images: bool
) -> datasets.DatasetDict:
    # An image folder is the user's own files: one that does not decode is named now, not in a traceback mid-run.
    kept = {}
    for split_name, split in raw.items():
        unreadable = find_unreadable_images(split, image_column)
        shown = "; ".join(description for _, description in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        if unreadable and not skip_bad_images:
            raise ValueError(
                f"{len(unreadable)} image(s) in {folder} cannot be read: {shown}. Remove or replace them, or pass "
                "--skip_bad_images to leave unreadable images out."
            )
        if unreadable:
            logger.warning(
                "Left out %d unreadable image(s) of the %s split of %s (--skip_bad_images): %s",
                len(unreadable),
                split_name,
                folder,
                shown,
            )
            bad_rows = {index for index, _ in unreadable}
            split = split.select([index for index in range(len(split)) if index not in bad_rows])
        kept[split_name] = split
    return datasets.DatasetDict(kept)


def _warn_of_missing_classes(train_labels: np.ndarray, test_labels: np.ndarray, class_names: list[str]) -> None:
    # A class without test images would be trained on and never measured; one without training images never learned.
    train_classes, test_classes = set(train_labels.tolist()), set(test_labels.tolist())
    for missing, has, lacks, consequence in (
        (train_classes - test_classes, "training", "test", "its accuracy is not measured"),
        (test_classes - train_classes, "test", "training", "it is never learned"),
    ):
        if missing:
            logger.warning(
                "Class(es) %s have %s images but no %s images: %s. Pass --test_split with a split that has them, "
                "or leave them out of --class_order.",
                [class_names[c] for c in sorted(missing)],
                has,
                lacks,
                consequence,
            )


def load_classification_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    cache_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    test_split: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    skip_bad_images: bool = False,
) -> ClassificationData:
    """
    Loads an image-classification data set and resolves its image column, label column, test split and class names.

    Args:
        dataset_name (`str`, *optional*, defaults to `None`):
            A Hub data set name, a local folder that `datasets.load_dataset` accepts, a folder written with
            `save_to_disk`, or `"digits"` for the bundled digits. With neither `dataset_name` nor `train_data_dir`
            the bundled digits are used.
        dataset_config_name (`str`, *optional*, defaults to `None`):
            The configuration of the data set, for data sets that have several.
        train_data_dir (`str`, *optional*, defaults to `None`):
            A folder of images laid out as `class_name/image.png` (the `imagefolder` builder).
        cache_dir (`str`, *optional*, defaults to `None`):
            Where `datasets` caches downloaded and prepared files.
        image_column (`str`, *optional*, defaults to `None`):
            The column holding the images; by default the first `datasets.Image` feature.
        label_column (`str`, *optional*, defaults to `None`):
            The column holding the labels; by default the first `datasets.ClassLabel` feature, else an integer column
            named one of `label`, `labels`, `fine_label`, `class`.
        test_split (`str`, *optional*, defaults to `None`):
            The split to evaluate on; by default "test", else "validation", else `validation_fraction` of the
            training split is held out.
        validation_fraction (`float`, *optional*, defaults to 0.1):
            The fraction of the training split held out for evaluation when the data set has no test split.
        seed (`int`, *optional*, defaults to 0):
            Seed of the held-out split, so that it is the same on every run.
        skip_bad_images (`bool`, *optional*, defaults to `False`):
            With `train_data_dir`, leave out images that do not decode (with a warning that counts and names them)
            instead of refusing the folder.

    Returns:
        [`ClassificationData`]: the train and test splits with their columns and class names.
    """
    if dataset_name is not None and train_data_dir is not None:
        raise ValueError(
            f"Got both dataset_name={dataset_name!r} and train_data_dir={train_data_dir!r}. "
            "Pass only one of --dataset_name and --train_data_dir."
        )
    if cache_dir is not None:
        if not str(cache_dir).strip():
            raise ValueError(
                "`--cache_dir` is empty; pass a folder such as `--cache_dir hf-cache`, or leave it unset."
            )
        check_writable_folder(cache_dir, "--cache_dir")

    if train_data_dir is not None:
        if not os.path.isdir(train_data_dir):
            raise ValueError(
                f"train_data_dir {train_data_dir!r} is not a folder. Pass --train_data_dir with an existing folder "
                "of images laid out as class_name/image.png."
            )
        raw = datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir)
    elif dataset_name is None or dataset_name == BUNDLED_DATASET_NAME:
        raw = load_bundled_digits()
    elif _is_save_to_disk_folder(dataset_name):
        raw = datasets.load_from_disk(dataset_name)
    else:
        raw = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)

    if isinstance(raw, datasets.Dataset):
        raw = datasets.DatasetDict({"train": raw})
    splits = list(raw.keys())
    if "train" not in raw:
        raise ValueError(
            f"The data set has no 'train' split; available splits: {splits}. Load a data set with a 'train' split "
            "or rename one of its splits to 'train'."
        )
    train = raw["train"]
    image_column = _find_image_column(train.features, image_column)
    if train_data_dir is not None:
        raw = _without_unreadable_images(raw, image_column, train_data_dir, skip_bad_images)
        train = raw["train"]
    if len(train) == 0:
        raise ValueError("The 'train' split is empty. Pass a data set with training examples.")
    if (
        train_data_dir is not None
        and label_column is None
        and not any(isinstance(feature, datasets.ClassLabel) for feature in train.features.values())
    ):
        class_folders = sorted(entry.name for entry in os.scandir(train_data_dir) if entry.is_dir())
        raise ValueError(
            f"The image folder {train_data_dir} has {len(class_folders)} class subfolder(s) {class_folders[:5]}, so "
            "`datasets` gives its images no labels; a class-incremental run needs at least two classes, laid out as "
            "class_name/image.png with one subfolder per class."
        )
    label_column = _find_label_column(train.features, label_column)

    if test_split is not None:
        if test_split not in raw:
            raise ValueError(
                f"Split '{test_split}' not found; available splits: {splits}. Pass --test_split with one of them."
            )
        test = raw[test_split]
    elif "test" in raw:
        test = raw["test"]
    elif "validation" in raw:
        test = raw["validation"]
    else:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {validation_fraction}. Pass a fraction such as 0.1."
            )
        logger.warning(
            "The data set has no 'test' or 'validation' split (splits: %s); holding out %.1f%% of 'train' "
            "(stratified, seed %d) for evaluation. Pass --test_split to choose a split.",
            splits,
            100 * validation_fraction,
            seed,
        )
        train, test = _carve_test_split(train, label_column, validation_fraction, seed)

    for split_name, split in (("test", test), ("train", train)):
        missing = [c for c in (image_column, label_column) if c not in split.features]
        if missing:
            raise ValueError(
                f"The {split_name} split lacks column(s) {missing}; its columns: {list(split.features.keys())}. "
                "Pass --test_split with a split that has the same columns as 'train'."
            )

    label_feature = train.features[label_column]
    train_labels = labels_of(train, label_column)
    test_labels = labels_of(test, label_column)
    if isinstance(label_feature, datasets.ClassLabel):
        class_names = list(label_feature.names)
    else:
        unique = np.unique(np.concatenate([train_labels, test_labels]))
        class_names = [str(int(v)) for v in unique]

    num_classes = len(class_names)
    for split_name, labels in (("train", train_labels), ("test", test_labels)):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise ValueError(
                f"The {split_name} split has labels outside [0, {num_classes}): {sorted(set(bad.tolist()))[:10]}. "
                "Labels must be class indices 0..num_classes-1 (no negative/missing labels): remap or filter them, "
                "or pass --label_column with a column of class indices."
            )
    _warn_of_missing_classes(train_labels, test_labels, class_names)

    return ClassificationData(
        train=train, test=test, image_column=image_column, label_column=label_column, class_names=class_names
    )
