"""A valid, non-default value for every keyword of ``syre.attach``: an entry point that restates the keywords by
hand (and misses one added later) fails the tests that pass all of them."""
from syre.config import ATTACH_KWARGS

ONE_OF_EACH = dict(gamma=0.1, sigma0=0.3, d_spread=0.2, seed=7, mode="seeded", include="*", exclude="*.bias",
                   strict=False, foreach=False, target="pretrained", rounding="stochastic")
assert set(ONE_OF_EACH) == set(ATTACH_KWARGS), sorted(set(ATTACH_KWARGS) ^ set(ONE_OF_EACH))


def check_attached(config, syres):
    """``syres`` were attached with ``ONE_OF_EACH``: each keyword shows in the config and the state."""
    assert config.as_kwargs() == ONE_OF_EACH
    for s in syres:
        sd = s.state_dict()
        assert sd["seed"] == 7 and sd["mode"] == "seeded" and sd["d_spread"] == 0.2 and sd["gamma"] == 0.1
        assert sd["target"]["kind"] == "pretrained" and sd["rounding"] == "stochastic"
        assert s.names() and not any(n.endswith(".bias") for n in s.names())
