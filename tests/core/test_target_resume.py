"""Resuming a run with a copied target ('pretrained', 'init') where the weights are restored before attach.

A framework callback (Lightning, transformers, sb3's restore) attaches after the framework restored the
checkpoint's trained weights, so target='pretrained' would copy the trained weights and the checkpoint is refused
(checksum). The remedy the error names, the run's starting weights as target={name: tensor}, resumes the run
exactly: the mapping's tensors are checked against the saved checksum (or syre.init_'s values), and later
checkpoints record the run's target kind again."""
import copy

import pytest
import torch

import syre
from small_models import batches, make_mlp
from syre import init as I


def _train(model, opt, n, start=0):
    for x, y in list(batches(start + n))[start:]:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def _opt(model):
    return torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.3)


def _run(target, start):
    """Train 3 steps from ``start`` weights; the checkpoint (model, optimizer) and the model trained 2 more steps."""
    m = copy.deepcopy(start)
    o = _opt(m)
    syre.attach(o, m, target=target)
    _train(m, o, 3)
    ckpt = copy.deepcopy((m.state_dict(), o.state_dict()))
    _train(m, o, 2, start=3)
    return ckpt, m


def _restored(ckpt):
    """What a framework callback sees: a model holding the checkpoint's trained weights, then syre attached."""
    m = make_mlp(seed=5)
    m.load_state_dict(ckpt[0])
    return m, _opt(m)


@pytest.mark.parametrize("target", ["pretrained", "init"])
def test_a_copied_target_resumes_from_the_starting_weights_as_a_mapping(target):
    start = make_mlp(seed=1)
    ckpt, uninterrupted = _run(target, start)
    saved = ckpt[1]["syre"]["target"]
    assert saved["kind"] == target and "checksum" in saved
    # target=<kind> after the weights were restored copies the trained weights: refused, naming the remedy
    m, o = _restored(ckpt)
    syre.attach(o, m, target=target)
    with pytest.raises(ValueError, match=r"checksum.*pass those weights as target=\{name: tensor\}"):
        o.load_state_dict(copy.deepcopy(ckpt[1]))
    # ... and the remedy works: the run goes on exactly as the uninterrupted one
    m, o = _restored(ckpt)
    s = syre.attach(o, m, target={n: p.detach().clone() for n, p in start.named_parameters()})
    o.load_state_dict(copy.deepcopy(ckpt[1]))
    _train(m, o, 2, start=3)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), uninterrupted.parameters()))
    assert s.state_dict()["target"] == saved  # recorded as the run's target again: resumable either way


def test_a_mapping_of_other_tensors_is_refused_naming_the_difference_and_nothing_changes():
    start = make_mlp(seed=1)
    ckpt, _ = _run("pretrained", start)
    m, o = _restored(ckpt)
    other = {n: p.detach() + 0.01 for n, p in start.named_parameters()}
    s = syre.attach(o, m, target=other)
    before = copy.deepcopy(s.state_dict())
    with pytest.raises(ValueError, match=r"saved with target 'pretrained'.*tensors differ .*checksum"):
        s.load_state_dict(ckpt[1]["syre"])
    assert s.state_dict() == before
    m, o = _restored(ckpt)
    s = syre.attach(o, m, target={"0.weight": start[0].weight.detach()}, exclude=["0.bias", "2.*"])
    with pytest.raises(ValueError):  # a mapping for fewer parameters: the saved state covers others
        s.load_state_dict(ckpt[1]["syre"])


def test_an_init_stream_target_resumes_from_the_values_syre_init_gives():
    start = make_mlp(seed=1)
    I.init_(start, seed=7)
    ckpt, uninterrupted = _run("init", start)
    assert ckpt[1]["syre"]["target"] == {"kind": "init", "init_seed": 7, "init_scheme": "lecun"}
    # a callback resume: syre.init_ ran on the fresh model, then the framework restored the trained weights
    m = make_mlp(seed=5)
    I.init_(m, seed=7)
    m.load_state_dict(ckpt[0])
    with pytest.raises(ValueError, match=r"no longer holds.*resuming a run.*target=\{name: tensor\}"):
        syre.attach(_opt(m), m, target="init")
    fresh = make_mlp(seed=5)
    I.init_(fresh, seed=7)
    o = _opt(m)
    s = syre.attach(o, m, target={n: p.detach().clone() for n, p in fresh.named_parameters()})
    o.load_state_dict(copy.deepcopy(ckpt[1]))
    assert s._target.record.seed == 7  # recomputed from the stream from now on
    _train(m, o, 2, start=3)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), uninterrupted.parameters()))
    assert s.state_dict()["target"] == ckpt[1]["syre"]["target"]
    # other tensors are refused, naming the parameter and the stream
    m2, o2 = _restored(ckpt)
    syre.attach(o2, m2, target={n: p.detach().clone() for n, p in make_mlp(seed=9).named_parameters()})
    with pytest.raises(ValueError, match=r"is not the value syre\.init_\(seed=7, scheme='lecun'\) gives it"):
        o2.load_state_dict(copy.deepcopy(ckpt[1]))
