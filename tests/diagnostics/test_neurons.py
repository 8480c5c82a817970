"""Unit detectors on constructed layers: planted duplicated, dead and low-rank units; none at init."""
import math

import pytest
import torch
from torch import nn

from syre.diagnostics import neurons as N


def gen(seed):
    return torch.Generator().manual_seed(seed)


def layer_pair(h=24, d_in=20, d_out=10, seed=0):
    g = gen(seed)
    w1 = torch.randn(h, d_in, generator=g) / math.sqrt(d_in)
    b1 = torch.randn(h, generator=g) * 0.1
    w2 = torch.randn(d_out, h, generator=g) / math.sqrt(h)
    return w1, b1, w2


def test_random_init_has_no_collapse():
    for seed in range(3):
        w1, b1, w2 = layer_pair(seed=seed)
        assert N.duplicate_units(w1, w2, b_in=b1) == []
        assert N.dead_units(w1, w2, b_in=b1) == []
        assert N.rotation_mirrors(w1, w2, b_in=b1).near == []
        for fam in (N.permutation_mirrors(w1, w2, b_in=b1), N.rescaling_mirrors(w1, w2, b_in=b1),
                    N.sign_flip_mirrors(w1, w2, b_in=b1)):
            assert fam.near == [] and fam.degree == 0.0
            assert float(fam.distances.min()) > 0.05 * fam.scale


def test_torch_default_init_of_modules_has_no_collapse():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512, 20, generator=g)
    torch.manual_seed(0)  # nn.Linear's own init; the assertion holds for any seed
    fc1, fc2 = nn.Linear(20, 64), nn.Linear(64, 5)
    acts = torch.relu(fc1(x)).detach()
    assert N.dead_units(fc1.weight, fc2.weight, b_in=fc1.bias, activations=acts) == []
    assert N.duplicate_units(fc1.weight, fc2.weight, b_in=fc1.bias) == []


def test_planted_duplicates_are_grouped():
    w1, b1, w2 = layer_pair()
    for i, j in [(3, 7), (3, 20), (11, 12)]:
        w1[j], b1[j] = w1[i], b1[i]
        w2[:, j] = w2[:, i]
    groups = N.duplicate_units(w1, w2, b_in=b1)
    assert groups == [[3, 7, 20], [11, 12]]
    scan = N.permutation_mirrors(w1, w2, b_in=b1)
    assert sorted(scan.near) == [(3, 7), (3, 20), (7, 20), (11, 12)]
    assert scan.count == 24 * 23 // 2
    assert scan.degree == pytest.approx(4 / scan.count)
    # float64 Gram: exact duplicates measure at round-off, far below the tolerance
    assert float(scan.distances.sort().values[3]) < 1e-6 * scan.scale


def test_near_duplicates_respect_tolerance():
    w1, b1, w2 = layer_pair()
    w1[5] = w1[4] + 1e-5
    b1[5], w2[:, 5] = b1[4], w2[:, 4]
    assert N.duplicate_units(w1, w2, b_in=b1) == [[4, 5]]
    assert N.duplicate_units(w1, w2, b_in=b1, rtol=1e-6) == []
    # equal incoming but different outgoing weights: not a mirror of the network
    w1b, b1b, w2b = layer_pair(seed=1)
    w1b[1], b1b[1] = w1b[0], b1b[0]
    assert N.duplicate_units(w1b, w2b, b_in=b1b) == []


def test_planted_dead_units_by_weights_and_by_activations():
    w1, b1, w2 = layer_pair(h=16)
    w1[2], b1[2], w2[:, 2] = 0.0, 0.0, 0.0  # on the sign-flip / rescaling mirror
    w1[9] *= 1e-7  # rescaling orbit: tiny incoming, normal outgoing -> functionally dead
    b1[9] *= 1e-7
    assert N.zero_units(w1, w2, b_in=b1) == [2]
    assert N.rescaling_mirrors(w1, w2, b_in=b1).near == [2, 9]
    assert N.sign_flip_mirrors(w1, w2, b_in=b1, activation="tanh").near == [2]
    x = torch.randn(256, 20, generator=gen(5))
    b1[12] = -100.0  # never active under ReLU
    acts = torch.relu(x @ w1.T + b1)
    assert N.inactive_units(acts) == [2, 9, 12]  # 9 barely varies: its input weights are ~0
    assert N.dead_units(w1, w2, b_in=b1, activations=acts) == [2, 9, 12]


def test_inactive_units_on_conv_and_sequence_layouts():
    a = torch.randn(8, 6, 5, 5, generator=gen(1))
    a[:, 4] = 0.7
    assert N.inactive_units(a) == [4]
    s = torch.randn(4, 9, 7, generator=gen(2))
    s[..., 1] = 0.0
    assert N.inactive_units(s, unit_dim=-1) == [1]


def test_low_rank_units_rotation_mirrors():
    # two linear maps in a row whose hidden space uses only 5 of 12 directions
    g = gen(7)
    basis, _ = torch.linalg.qr(torch.randn(12, 5, generator=g, dtype=torch.float64))
    w1 = basis @ torch.randn(5, 20, generator=g, dtype=torch.float64)
    w2 = torch.randn(7, 5, generator=g, dtype=torch.float64) @ basis.T
    scan = N.rotation_mirrors(w1, w2)
    assert len(scan.near) == 7 and scan.degree == pytest.approx(7 / 12)
    assert N.duplicate_units(w1, w2) == [] and N.zero_units(w1, w2) == []
    # a hidden layer wider than (inputs + outputs) has such directions by construction
    assert len(N.rotation_mirrors(torch.randn(30, 8, generator=g), torch.randn(4, 30, generator=g)).near) == 30 - 12
    # the collapsed directions are exact: n^T W1 = 0 and W2 n = 0 for n in the complement
    null = torch.linalg.svd(torch.cat([w1, w2.T], 1)).U[:, 5:]
    assert float((null.T @ w1).abs().max()) < 1e-12 and float((w2 @ null).abs().max()) < 1e-12


def test_conv_and_flattened_linear_layouts():
    g = gen(4)
    conv1 = torch.randn(8, 3, 3, 3, generator=g)
    conv2 = torch.randn(6, 8, 3, 3, generator=g)
    fc = torch.randn(5, 8 * 4 * 4, generator=g)  # Linear reading a flattened [N, 8, 4, 4] map
    conv1[6] = conv1[1]
    conv2[:, 6] = conv2[:, 1]
    assert N.duplicate_units(conv1, conv2) == [[1, 6]]
    v = N.unit_matrix(conv1, fc)
    assert v.shape == (8, 27 + 5 * 16)
    assert torch.equal(v[3, 27:], fc.view(5, 8, 16)[:, 3].reshape(-1).double())
    fc.view(5, 8, 16)[:, 6] = fc.view(5, 8, 16)[:, 1]
    assert N.duplicate_units(conv1, fc) == [[1, 6]]


def test_multiple_incoming_tensors_batchnorm_style():
    w1, b1, w2 = layer_pair(h=10)
    bn_w, bn_b = torch.ones(10), torch.zeros(10)
    w1[3], b1[3], w2[:, 3] = w1[0], b1[0], w2[:, 0]
    assert N.duplicate_units([w1, bn_w], w2, b_in=[b1, bn_b]) == [[0, 3]]
    bn_w[3] = 2.0  # different BN scale: no longer a mirror
    assert N.duplicate_units([w1, bn_w], w2, b_in=[b1, bn_b]) == []


def test_activation_families():
    assert N.activation_families("relu") == ("permutation", "rescaling")
    assert N.activation_families("tanh") == ("permutation", "sign")
    assert N.activation_families("gelu") == ("permutation",)
    assert N.activation_families("identity") == ("permutation", "sign", "rescaling", "rotation")
    with pytest.raises(ValueError, match="swish2"):
        N.activation_families("swish2")
    with pytest.raises(ValueError, match="not odd"):
        N.sign_flip_mirrors(*layer_pair()[:1], activation="relu")
    with pytest.raises(ValueError, match="not positively homogeneous"):
        N.rescaling_mirrors(*layer_pair()[:1], activation="tanh")


def test_errors():
    w1, b1, w2 = layer_pair()
    with pytest.raises(ValueError, match="w_out.*dim 1"):
        N.duplicate_units(w1, torch.randn(10, 33))
    with pytest.raises(ValueError, match="b_in.*units on dim 0"):
        N.duplicate_units(w1, w2, b_in=torch.zeros(23))
    with pytest.raises(TypeError, match="w_in dtype"):
        N.zero_units(torch.zeros(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="rtol"):
        N.zero_units(w1, rtol=2.0)
    with pytest.raises(ValueError, match="atol"):
        N.zero_units(w1, atol=-1.0)
    with pytest.raises(ValueError, match="give"):
        N.dead_units()
    with pytest.raises(ValueError, match="both"):
        N.rescaling_mirrors(w1)
    with pytest.raises(ValueError, match="unit_dim"):
        N.inactive_units(torch.zeros(3, 4), unit_dim=5)
    with pytest.raises(TypeError, match="w_in"):
        N.unit_matrix("weights")
