"""Same seed, same anchor across runs: the feature E13 measures and examples/average_shared_anchor.py uses."""
import re

import pytest
import torch
from torch import nn

import syre
from repo import load_script
from syre.data import fashion_mnist_dirs


def _landed(init_seed: int, anchor_seed: int) -> torch.Tensor:
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    gen = torch.Generator().manual_seed(init_seed)  # a different initialisation per run
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    # a shape rule: under the default "match" each run's anchor scale would follow its own init's RMS
    syre.attach(opt, net, gamma=1.0, seed=anchor_seed, d_spread=0.0, sigma0="lecun")
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # lr * gamma = 1 on a zero gradient lands exactly on the anchor
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_under_match_the_direction_is_shared_and_the_scale_is_each_runs_own():
    def anchor_of(init_seed):
        net = nn.Linear(6, 5)
        gen = torch.Generator().manual_seed(init_seed)
        with torch.no_grad():
            net.weight.copy_(torch.randn(net.weight.shape, generator=gen) * (0.5 + init_seed))
        s = syre.attach(torch.optim.SGD(net.parameters(), lr=1.0), net, gamma=1.0, seed=7, sigma0="match")
        return s.anchor("weight").theta0, float(net.weight.detach().double().square().mean().sqrt())

    (a, ra), (b, rb) = anchor_of(1), anchor_of(2)
    assert torch.allclose(a / ra, b / rb, rtol=1e-5, atol=1e-7) and not torch.allclose(a, b)


def test_two_runs_with_the_same_seed_decay_toward_the_same_anchor():
    a, b, c = _landed(1, 7), _landed(2, 7), _landed(1, 8)
    assert torch.equal(a, b)  # different initialisations, one anchor
    assert not torch.allclose(a, c)  # another seed, another anchor
    # and it is the documented pure function of (seed, name, index)
    w = syre.anchor(7, "0.weight", (5, 6), sigma0=1 / 6 ** 0.5, d_spread=0.0).theta0
    assert torch.equal(a[:30], w.reshape(-1).to(a.dtype))


@pytest.mark.skipif(not any((d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file()
                            for d in fashion_mnist_dirs()), reason="Fashion-MNIST files not installed")
def test_the_averaging_example_runs_and_prints_its_table(capsys):
    mod = load_script("examples/average_shared_anchor.py", "average_shared_anchor")
    assert mod.main(["--epochs", "1", "--n-train", "500"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("setting") and len(lines) == 4
    for line in lines[1:]:
        nums = [float(x) for x in re.findall(r"\d\.\d{4}", line)]
        assert len(nums) == 3 and all(0.0 <= x <= 1.0 for x in nums)
    assert "seed 0 in both runs" in lines[3]
