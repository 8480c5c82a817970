"""The checkpoint format pinned byte for byte: ``Syre.state_dict()`` of every set-up in
``tests/data/state_dicts_v*.json``, and a format-1 checkpoint (``tests/data/ckpt_v1.pt``) resumed bitwise."""
import json
import warnings

import pytest
import torch
from torch import nn

import state_setups
import syre


@pytest.mark.parametrize("name", sorted(state_setups.SETUPS))
def test_state_dict_bytes_are_pinned(name):
    """New attachments save the pinned v2 bytes; the same set-up loaded from its v1 state (written
    by the core before the rebuild) saves the v1 bytes again."""
    want = json.loads(state_setups.DATA.read_text())[name]
    assert state_setups.state_bytes(name).hex() == want
    want_v1 = json.loads(state_setups.DATA_V1.read_text())[name]
    assert state_setups.v1_roundtrip_bytes(name).hex() == want_v1


def test_a_v1_checkpoint_resumes_bitwise_with_its_own_anchors():
    """``data/ckpt_v1.pt`` was written by the format-1 core (commit def46c5): a run checkpointed at step
    3, the anchors, and the parameters that run reached at step 6. Resumed here, the v1 state keeps the
    Box-Muller anchors bitwise, and the same three steps reach the saved parameters to within the float
    rounding of the machine's matmul kernels (1 ulp seen across CPUs), far below what format-2 anchors
    would move them."""
    saved = torch.load(state_setups.DATA.parent / "ckpt_v1.pt", weights_only=True)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    o = torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.2)
    s = syre.attach(o, m, d_spread=0.1, seed=11)
    m.load_state_dict(saved["checkpoint"]["model"])
    o.load_state_dict(saved["checkpoint"]["optimizer"])
    assert s.state_dict()["version"] == 1
    sigma0s = {p["name"]: p["sigma0"] for p in s.state_dict()["params"]}
    for name, theta0 in saved["theta0"].items():
        assert torch.equal(s.anchor(name).theta0, theta0) and torch.equal(s.anchor(name).d, saved["d"][name])
        assert torch.equal(theta0, syre.anchor(11, name, theta0.shape, sigma0=sigma0s[name], version=1).theta0)
        assert not torch.equal(theta0, syre.anchor(11, name, theta0.shape, sigma0=sigma0s[name]).theta0)  # format 2
    for x, y in saved["data"][3:]:
        o.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        o.step()
    for k, v in saved["final"].items():
        torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)
    # The same resume with a fresh (format-2) attachment lands far outside that tolerance.
    m2 = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.05, weight_decay=0.2)
    syre.attach(o2, m2, d_spread=0.1, seed=11)
    m2.load_state_dict(saved["checkpoint"]["model"])
    plain = {k: v for k, v in saved["checkpoint"]["optimizer"].items() if k != "syre"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o2.load_state_dict(plain)
    for x, y in saved["data"][3:]:
        o2.zero_grad()
        nn.functional.mse_loss(m2(x), y).backward()
        o2.step()
    assert max(float((m2.state_dict()[k] - v).abs().max()) for k, v in saved["final"].items()) > 1e-4
    assert o.state_dict()["syre"]["version"] == 1
