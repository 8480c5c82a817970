"""Small datasets for the demo, the diagnostics command and the benchmarks. Nothing downloads.

* ``digits()``: scikit-learn's 8x8 digits (ships inside scikit-learn; ``pip install torch-syre[data]``).
* ``fashion_mnist()``: the original IDX files, read from ``$SYRE_DATA_DIR``, ``root=`` or
  ``/usr/share/datasets/fashion-mnist`` (Debian: ``apt-get install dataset-fashion-mnist``).
* ``teacher_student()``: a synthetic regression task from a random 2-layer ReLU teacher.

Every loader returns a ``Split(x_train, y_train, x_test, y_test)`` of float32 inputs in [0, 1]
(or standardised, for the synthetic task) and int64 labels (float targets for regression),
and draws any randomness from an explicit ``torch.Generator`` seeded by its ``seed``.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import List, NamedTuple, Optional, Union

import numpy as np
import torch

__all__ = ["Split", "digits", "fashion_mnist", "teacher_student", "FASHION_MNIST_DIRS", "DataNotFoundError"]

FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files were not found; the message says where syre looked and how to get them."""


class Split(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int >= 0")
    return seed


def digits(*, test_fraction: float = 0.25, seed: int = 0, flat: bool = True) -> Split:
    """scikit-learn's digits (1797 images, 8x8, 10 classes), pixels scaled to [0, 1].

    The split is a seeded permutation (``seed``); ``flat=False`` gives ``(N, 1, 8, 8)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Invalid test_fraction: {test_fraction!r}; expected 0 < test_fraction < 1")
    _check_seed(seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
        raise ImportError("digits() needs scikit-learn: pip install 'torch-syre[data]'") from exc
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    if not flat:
        x = x.view(-1, 1, 8, 8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(x) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Split(x[tr], y[tr], x[te], y[te])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4]!r})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {arr.size} (truncated?)")
    return arr.reshape(dims)


def _find(stem: str, dirs: List[Path]) -> Optional[Path]:
    for d in dirs:
        for suffix in (".gz", ""):
            p = d / (stem + suffix)
            if p.is_file():
                return p
    return None


def fashion_mnist_dirs(root: Union[str, os.PathLike, None] = None) -> List[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    if os.environ.get("SYRE_DATA_DIR"):
        dirs.append(Path(os.environ["SYRE_DATA_DIR"]) / "fashion-mnist")
        dirs.append(Path(os.environ["SYRE_DATA_DIR"]))
    dirs += [Path(d) for d in FASHION_MNIST_DIRS]
    return dirs


def fashion_mnist(
    *,
    root: Union[str, os.PathLike, None] = None,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    flat: bool = True,
    size: int = 28,
    seed: int = 0,
) -> Split:
    """Fashion-MNIST from its original IDX files; pixels scaled to [0, 1].

    ``n_train``/``n_test`` take a seeded random subset (class balance is that of a uniform
    draw); ``size < 28`` average-pools the images (14 -> 2x2 pooling, 7 -> 4x4); ``flat=False``
    gives ``(N, 1, size, size)``. Raises ``DataNotFoundError`` naming every place it looked.
    """
    _check_seed(seed)
    if size not in (28, 14, 7):
        raise ValueError(f"Invalid size: {size!r}; expected 28, 14 or 7")
    for arg, limit in (("n_train", n_train), ("n_test", n_test)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ValueError(f"Invalid {arg}: {limit!r}; expected a positive int or None")
    dirs = fashion_mnist_dirs(root)
    out = []
    for split, limit in (("train", n_train), ("test", n_test)):
        img_stem, lab_stem = _FASHION_FILES[split]
        img_path, lab_path = _find(img_stem, dirs), _find(lab_stem, dirs)
        if img_path is None or lab_path is None:
            looked = ", ".join(str(d) for d in dirs)
            raise DataNotFoundError(
                f"Fashion-MNIST file {img_stem if img_path is None else lab_stem}[.gz] not found; looked in: {looked}. "
                "Get it with `apt-get update && apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or put the "
                "four original IDX files in a folder and pass root=... or set SYRE_DATA_DIR"
            )
        x = torch.from_numpy(_read_idx(img_path).astype(np.float32) / 255.0)
        y = torch.from_numpy(_read_idx(lab_path).astype(np.int64))
        if limit is not None:
            gen = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
            idx = torch.randperm(len(x), generator=gen)[:limit]
            x, y = x[idx], y[idx]
        x = x.unsqueeze(1)
        if size != 28:
            x = torch.nn.functional.avg_pool2d(x, 28 // size)
        out += [x.reshape(len(x), -1) if flat else x, y]
    return Split(*out)


def teacher_student(
    *,
    n_train: int = 512,
    n_test: int = 512,
    d_in: int = 16,
    d_hidden: int = 8,
    d_out: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> Split:
    """Regression on a random 2-layer ReLU teacher ``y = W2 relu(W1 x)`` with Gaussian inputs."""
    _check_seed(seed)
    for arg, v in (("n_train", n_train), ("n_test", n_test), ("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"Invalid {arg}: {v!r}; expected a positive int")
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d_hidden, d_in, generator=g) / d_in**0.5
    w2 = torch.randn(d_out, d_hidden, generator=g) / d_hidden**0.5
    x = torch.randn(n_train + n_test, d_in, generator=g)
    y = torch.relu(x @ w1.T) @ w2.T
    if noise:
        y = y + noise * torch.randn(y.shape, generator=g)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
