import pytest
from torch import nn
from torch.nn.utils import parametrize

from syre import select


def test_canonical_names_strip_wrappers():
    assert select.canonical_name("module._orig_mod.enc.weight") == "module.enc.weight"
    assert select.canonical_name("_orig_mod.enc._fsdp_wrapped_module.weight") == "enc.weight"
    assert select.canonical_name("enc.parametrizations.weight.original") == "enc.weight"
    assert select.canonical_name("a._checkpoint_wrapped_module.b.bias") == "a.b.bias"


def test_collect_unwraps_and_reads_through_parametrizations():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    names = [i.name for i in select.collect(nn.DataParallel(m)).values()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]

    class Id(nn.Module):
        def forward(self, x):
            return x

    parametrize.register_parametrization(m[0], "weight", Id())
    infos = list(select.collect(m).values())
    assert sorted(i.name for i in infos) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    w = [i for i in infos if i.name == "0.weight"][0]
    assert w.module is m[0] and w.attr == "weight"


def test_rules():
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    infos = list(select.collect(m).values())
    pick = lambda rule: [i.name for i in infos if select.matches(rule, i)]
    assert pick(select.NORM_TYPES) == ["1.weight", "1.bias"]
    assert pick("*.bias") == ["0.bias", "1.bias"]
    assert pick([nn.Linear, "1.w*"]) == ["0.weight", "0.bias", "1.weight"]
    assert pick(lambda n, p: p.dim() == 2) == ["0.weight"]
    for bad in (3, [nn.Linear, 2.0], int):
        with pytest.raises(TypeError, match="exclude"):
            select.check_rule("exclude", bad)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        select.collect("not a model")
