import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import syre
from repo import SUPPORT
from small_models import make_mlp
from syre.optim import FORMAT_VERSION


def _run(*args):
    env = dict(os.environ)
    src = str(Path(syre.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), src, env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(SUPPORT / "ckpt_script.py"), *map(str, args)], check=True, env=env)


@pytest.mark.parametrize("via_optimizer", [False, True])
def test_resume_in_a_new_process_is_bitwise(tmp_path, via_optimizer):
    full, half, resumed = tmp_path / "full.pt", tmp_path / "half.pt", tmp_path / "resumed.pt"
    import ckpt_script

    ckpt_script.main(full, 0, 20)
    ckpt_script.main(half, 0, 10)
    _run(resumed, 10, 20, half, *(["--via-optimizer"] if via_optimizer else []))
    a = torch.load(full, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert b["syre"]["seed"] == 7  # restored from the checkpoint, not the constructor's 999


def test_state_is_small_and_weights_only_safe(tmp_path):
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m, d_spread=0.1)
    sd = s.state_dict()
    assert sd["version"] == FORMAT_VERSION and sd["seed"] == 0
    assert [p["name"] for p in sd["params"]] == s.names()
    torch.save(sd, tmp_path / "s.pt")
    assert os.path.getsize(tmp_path / "s.pt") < 4096  # no anchors inside
    assert torch.load(tmp_path / "s.pt", weights_only=True) == sd
    assert o.state_dict()["syre"] == sd


def _fresh():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    return m, o, syre.attach(o, m, gamma=0.1, seed=5, sigma0=0.2)


def test_mismatched_model_is_refused_and_nothing_changes():
    m, o, s = _fresh()
    saved = s.state_dict()
    other = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))  # 2.weight/2.bias shapes differ
    o2 = torch.optim.SGD(other.parameters(), lr=0.1)
    s2 = syre.attach(o2, other, gamma=0.1, seed=1)
    before = s2.anchor("2.weight").theta0.clone()
    with pytest.raises(ValueError, match=r"shape mismatch: \['2.bias: saved \(3,\), model \(4,\)', "
                                         r"'2.weight: saved \(3, 16\), model \(4, 16\)'"):
        s2.load_state_dict(saved)
    assert s2.seed == 1 and torch.equal(s2.anchor("2.weight").theta0, before)
    renamed = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Identity(), nn.Linear(16, 3))
    s3 = syre.attach(torch.optim.SGD(renamed.parameters(), lr=0.1), renamed, gamma=0.1)
    with pytest.raises(ValueError, match=r"not in the saved state: \['3.bias', '3.weight'\].*not covered here: \['2.bias', '2.weight'\]"):
        s3.load_state_dict(saved)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda sd: sd.update(version=FORMAT_VERSION + 1), "newer"),
        (lambda sd: sd.pop("params"), "missing key 'params'"),
        (lambda sd: sd.update(format="other"), "not a Syre.state_dict"),
        (lambda sd: sd.update(seed=-1), "seed"),
        (lambda sd: sd["params"].__setitem__(0, "junk"), "bad parameter record"),
        (lambda sd: sd["params"][0].update(sigma0=float("nan")), "sigma0"),
    ],
)
def test_bad_states_are_refused_and_nothing_changes(mutate, match):
    m, o, s = _fresh()
    sd = copy.deepcopy(s.state_dict())
    mutate(sd)
    before = s.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        s.load_state_dict(sd)
    assert s.state_dict() == before


def test_optimizer_load_with_bad_syre_state_changes_nothing():
    m, o, s = _fresh()
    sd = o.state_dict()
    sd["syre"] = dict(sd["syre"], version=FORMAT_VERSION + 1)
    sd["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match="newer"):
        o.load_state_dict(sd)
    assert o.param_groups[0]["lr"] == 0.1
