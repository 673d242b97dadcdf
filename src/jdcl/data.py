"""Loading image-classification data sets and converting them once to in-memory uint8 tensors.

Every data set goes through `datasets`: a Hub name, a local folder that `datasets.load_dataset` understands, a folder
written with `Dataset.save_to_disk`/`DatasetDict.save_to_disk`, an image folder, or the small bundled digits set that
needs no network.
"""

import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import torch

from .paths import check_writable_folder


logger = logging.getLogger(__name__)

BUNDLED_DATASET_NAME = "digits"

_LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "class")
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


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


def images_to_tensor(images: list[PIL.Image.Image], resolution: int, num_channels: int) -> torch.Tensor:
    """
    Converts PIL images to one uint8 tensor, converting the colour mode and resizing.

    Args:
        images (`list[PIL.Image.Image]`): The images, of any size and mode.
        resolution (`int`): Side of the square output images.
        num_channels (`int`): 1 (grayscale, mode "L") or 3 (mode "RGB").

    Returns:
        `torch.Tensor`: uint8 tensor of shape `[N, num_channels, resolution, resolution]`.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}. Pass --num_channels 1 or 3.")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}. Pass e.g. --resolution 32.")
    mode = "L" if num_channels == 1 else "RGB"
    size = (resolution, resolution)
    arrays = []
    for image in images:
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != size:
            # PIL's bilinear filter widens its support when downsampling, i.e. it antialiases.
            image = image.resize(size, resample=PIL.Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if num_channels == 1 else array.transpose(2, 0, 1))
    if not arrays:
        return torch.empty((0, num_channels, resolution, resolution), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))


def uint8_to_model_range(images: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    r"""
    uint8 images in [0, 255] as float32 in [-1, 1], the range every jdcl model reads.

    Args:
        images (`torch.Tensor`): uint8 `(N, C, H, W)` images.
        device (`str` or `torch.device`, *optional*): Where the result lives; the uint8 images travel there first, as
            they are a quarter of the float's size. Unchanged when `None`.
    """
    return images.to(device).float().div(127.5).sub(1.0)


@dataclass
class TensorData:
    """
    A whole split held in memory as uint8 images and int64 labels.

    Args:
        images (`torch.Tensor`): uint8 tensor of shape `[N, C, H, W]`.
        labels (`torch.Tensor`): int64 tensor of shape `[N]`.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W], got {self.images.dtype} with shape "
                f"{tuple(self.images.shape)}. Build it with `images_to_tensor` or `prepare_tensors`."
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(
                f"labels must be an int64 tensor [N], got {self.labels.dtype} with shape {tuple(self.labels.shape)}. "
                "Convert them with `.long()`."
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"Got {len(self.images)} images but {len(self.labels)} labels. Pass one label per image.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, classes: Sequence[int]) -> "TensorData":
        """
        Keeps only the examples whose label is in `classes`.

        Args:
            classes (`Sequence[int]`): The class indices to keep.

        Returns:
            [`TensorData`]: the selected examples, in their original order.
        """
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        mask = torch.isin(self.labels, wanted)
        if not bool(mask.any()):
            # One message for every split: the trainer subsets the training split, and the test split to evaluate.
            raise ValueError(
                f"No example of this split has a label in {list(classes)} (labels present: "
                f"{torch.unique(self.labels).tolist()}), so a task of those classes has nothing to train or evaluate "
                "on. Choose a --class_order of classes present in the data's training and test splits."
            )
        return TensorData(images=self.images[mask], labels=self.labels[mask])

    def select(self, mask: torch.Tensor) -> "TensorData":
        """
        Keeps the examples where `mask` (bool, one per example) is `True`, in their original order.

        Args:
            mask (`torch.Tensor`): Which examples to keep.
        """
        return TensorData(images=self.images[mask], labels=self.labels[mask])

    def images_of(self, classes: Sequence[int]) -> torch.Tensor:
        """The images of the examples of `classes` (possibly none), without their labels."""
        return self.images[torch.isin(self.labels, torch.as_tensor(list(classes), dtype=torch.int64))]

    def to_float(self) -> torch.Tensor:
        """
        Returns:
            `torch.Tensor`: the images as float32 in [-1, 1].
        """
        return uint8_to_model_range(self.images)


def infer_num_channels(dataset: datasets.Dataset, image_column: str) -> int:
    """
    Guesses the channel count of a data set from its first image.

    Args:
        dataset (`datasets.Dataset`): The split to look at.
        image_column (`str`): The column holding the images.

    Returns:
        `int`: 1 if the first image is grayscale (modes "1", "L", "LA", "I", "F"), else 3.
    """
    if len(dataset) == 0:
        raise ValueError("Cannot infer the number of channels of an empty split. Pass --num_channels explicitly.")
    if image_column not in dataset.features:
        raise ValueError(
            f"Column '{image_column}' not found; available columns: {list(dataset.features.keys())}. "
            "Pass --image_column with one of them."
        )
    return 1 if dataset[0][image_column].mode in _GRAYSCALE_MODES else 3


def prepare_tensors(
    dataset: datasets.Dataset,
    image_column: str,
    label_column: str,
    resolution: int,
    num_channels: int,
    batch_size: int = 1000,
    show_progress: bool = True,
    cache_dir: str | None = None,
) -> TensorData:
    """
    Decodes and resizes a whole split once into uint8 tensors, through `datasets.Dataset.map`.

    The converted images are cached on disk (keyed by the split's fingerprint, the resolution and the channels), so
    that the processes of a run and later runs read them instead of decoding again. Converting once is deliberate:
    the targeted data sets fit in memory as uint8, and decoding PIL images at every training step would dominate CPU
    training time.

    Args:
        dataset (`datasets.Dataset`): The split to convert.
        image_column (`str`): The column holding the images.
        label_column (`str`): The column holding integer class indices.
        resolution (`int`): Side of the square output images.
        num_channels (`int`): 1 or 3.
        batch_size (`int`, *optional*, defaults to 1000): Rows decoded at a time.
        show_progress (`bool`, *optional*, defaults to `True`): Whether to show a progress bar.
        cache_dir (`str`, *optional*, defaults to `None`):
            The `datasets` cache folder; the converted images go to its `jdcl-images/` (the default cache of
            `datasets` when `None`). Nothing is cached when `datasets` caching is disabled.

    Returns:
        [`TensorData`]: the images (uint8 `[N, C, resolution, resolution]`) and labels (int64 `[N]`).
    """
    for column, flag in ((image_column, "--image_column"), (label_column, "--label_column")):
        if column not in dataset.features:
            raise ValueError(
                f"Column '{column}' not found; available columns: {list(dataset.features.keys())}. "
                f"Pass {flag} with one of them."
            )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    images_to_tensor([], resolution, num_channels)  # checks the resolution and channels before any decoding
    labels = torch.from_numpy(labels_of(dataset, label_column))
    if len(dataset) == 0:
        return TensorData(
            images=torch.empty((0, num_channels, resolution, resolution), dtype=torch.uint8), labels=labels
        )

    def convert(images: list[PIL.Image.Image]) -> dict[str, np.ndarray]:
        return {"pixel_values": images_to_tensor(images, resolution, num_channels).numpy()}

    cache_file_name = None
    if datasets.is_caching_enabled():
        folder = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "jdcl-images")
        os.makedirs(folder, exist_ok=True)
        cache_file_name = os.path.join(folder, f"{dataset._fingerprint}-{resolution}px-{num_channels}ch.arrow")
    bars_were_disabled = datasets.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        converted = dataset.select_columns([image_column]).map(
            convert,
            batched=True,
            batch_size=batch_size,
            input_columns=[image_column],
            remove_columns=[image_column],
            features=datasets.Features(
                {"pixel_values": datasets.Array3D(shape=(num_channels, resolution, resolution), dtype="uint8")}
            ),
            cache_file_name=cache_file_name,
            load_from_cache_file=cache_file_name is not None,
            desc="Decoding and resizing images",
        )
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()
    # Formatters widen integers to int64 unless told otherwise.
    pixels = converted.with_format("numpy", dtype=np.uint8)[:]["pixel_values"]
    images = torch.from_numpy(np.ascontiguousarray(pixels))
    return TensorData(images=images, labels=labels)
