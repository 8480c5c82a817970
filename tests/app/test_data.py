import gzip
import struct

import pytest
import torch

from syre import data


def test_digits_split_is_seeded_and_scaled():
    a, b = data.digits(seed=1), data.digits(seed=1)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, data.digits(seed=2).x_train)
    assert a.x_train.shape[1] == 64 and len(a.x_train) + len(a.x_test) == 1797
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert data.digits(flat=False).x_test.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)


def test_fashion_mnist_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", [str(tmp_path / "nowhere")])
    monkeypatch.delenv("SYRE_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError, match=r"looked in: .*elsewhere.*nowhere.*apt-get install -y dataset-fashion-mnist"):
        data.fashion_mnist(root=tmp_path / "elsewhere")


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 8, arr.dim()) + struct.pack(">" + "I" * arr.dim(), *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.to(torch.uint8).numpy().tobytes())


def test_fashion_mnist_reads_idx_files_and_refuses_truncated_ones(tmp_path):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", torch.randint(0, 10, (n,), generator=g))
    s = data.fashion_mnist(root=tmp_path, n_train=8, size=14, flat=False)
    assert s.x_train.shape == (8, 1, 14, 14) and s.x_test.shape == (10, 1, 14, 14)
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0 and s.y_train.dtype == torch.int64
    raw = gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        data.fashion_mnist(root=tmp_path)


def test_fashion_mnist_installed_copy():
    try:
        s = data.fashion_mnist(n_train=100, n_test=50, size=7)
    except data.DataNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    assert s.x_train.shape == (100, 49) and set(s.y_test.tolist()) <= set(range(10))


def test_teacher_student_is_deterministic():
    a, b = data.teacher_student(seed=3), data.teacher_student(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="d_in"):
        data.teacher_student(d_in=0)
