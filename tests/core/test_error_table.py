"""One table of argument errors for every public entry point, as torch's ``OptimizerInfo.optim_error_inputs_func``.

Each row is (entry point, arguments) -> (error type, message pattern, the argument's name): the message must name
the argument and the value (the pattern holds the value) and say what is allowed; an entry point that acts on a
model or an optimizer changes nothing before it refuses. ``test_every_public_entry_point_has_a_row`` makes an entry
point added later without rows fail. Framework rows skip where the framework is not installed (as the other
integration tests do); ci/integrations.sh runs this file with all of them installed.
"""
import copy
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import pytest
import torch
from torch import nn

import syre
from small_models import make_mlp

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Row:
    entry: str  # a key of ENTRIES
    kwargs: Dict[str, Any]
    error: type
    match: str  # a regex searched in the message; it holds the value
    arg: Optional[str] = None  # the text naming the argument (default: the row's first keyword)

    @property
    def names(self) -> str:
        return self.arg if self.arg is not None else next(iter(self.kwargs))


class Setup:
    """A fresh model and optimizer, and what must not change when an entry point refuses."""

    def __init__(self, init=False):
        self.model = make_mlp()
        if init:
            syre.init_(self.model, seed=0)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=0.01, weight_decay=0.05)
        self.opts = [torch.optim.SGD(self.model[0].parameters(), lr=0.1),
                     torch.optim.SGD(self.model[2].parameters(), lr=0.1, weight_decay=0.1)]
        self._state = copy.deepcopy(self.model.state_dict())
        self._names = [n for n, _ in self.model.named_parameters()]
        self._groups = [self._settings(o) for o in [self.opt] + self.opts]

    @staticmethod
    def _settings(o):
        return [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]

    def check_unchanged(self):
        assert [n for n, _ in self.model.named_parameters()] == self._names
        assert all(torch.equal(v, self._state[k]) for k, v in self.model.state_dict().items())
        for o, before in zip([self.opt] + self.opts, self._groups):
            assert self._settings(o) == before and not o._optimizer_step_pre_hooks and not o._optimizer_step_post_hooks
            assert syre.attached(o) is None


#: The import each framework row needs (skipped without it), and the syre module of its entry points.
FRAMEWORKS = {"lightning": ("lightning.pytorch", "syre.integrations.lightning"),
              "transformers": ("transformers", "syre.integrations.transformers"),
              "sb3": ("stable_baselines3", "syre.integrations.sb3"), "optax": ("optax", "syre.optax")}


def _framework(short: str, entry: str, defaults=None) -> Callable:
    def call(setup, kw):
        needs, module = FRAMEWORKS[short]
        pytest.importorskip(needs)
        return getattr(importlib.import_module(module), entry)(**{**(defaults or {}), **kw})
    return call


def _model_first(name: str) -> Callable:
    return lambda setup, kw: getattr(syre, name)(setup.model, **kw)


# entry point -> (setup: does it need syre.init_ first, call(setup, kwargs))
ENTRIES: Dict[str, tuple] = {
    "attach": (False, lambda s, kw: syre.attach(s.opt, s.model, **kw)),
    "Syre": (False, lambda s, kw: syre.Syre(s.opt, s.model, **kw)),
    "MultiSyre": (False, lambda s, kw: syre.MultiSyre(s.opts, s.model, **kw)),
    "Config": (False, lambda s, kw: syre.Config(**kw)),
    "Penalty": (False, _model_first("Penalty")),
    "reparametrize": (False, _model_first("reparametrize")),
    "AdamW": (False, lambda s, kw: syre.AdamW(s.model.parameters(), **kw)),
    "SGD": (False, lambda s, kw: syre.SGD(s.model.parameters(), **{"lr": 0.1, **kw})),
    "init_": (False, lambda s, kw: syre.init_(kw.pop("model", s.model), **kw)),
    "shrink_perturb_": (True, lambda s, kw: syre.shrink_perturb_(s.model, **{"shrink": 0.5, "perturb": 0.1, "step": 0, **kw})),
    "reset_units_": (True, lambda s, kw: syre.reset_units_(s.model, **{"layer": "0", "units": [1], **kw})),
    "anchor": (False, lambda s, kw: syre.anchor(**{"seed": 0, "name": "w", "shape": (3,), "sigma0": 1.0, **kw})),
    "plain_state_dict": (False, lambda s, kw: syre.plain_state_dict(**kw)),
    "attached": (False, lambda s, kw: syre.attached(**kw)),
    "equivalent_gamma": (False, lambda s, kw: syre.equivalent_gamma(**kw)),
    **{f"{short}.{name}": (False, _framework(short, name)) for short, names in (
        ("lightning", ("SyreCallback", "MonitorCallback")), ("transformers", ("SyreCallback", "MonitorCallback")),
        ("sb3", ("attach", "policy_optimizers")), ("optax", ("syre_decay", "sigma0s", "param_names"))) for name in names},
    "optax.anchor": (False, _framework("optax", "anchor", dict(seed=0, name="w", shape=(3,), sigma0=1.0))),
}


def _attach_rows(entry: str):
    """The rows every entry point that takes syre.attach's keywords shares (one validation: syre.config.Config)."""
    return [
        Row(entry, dict(gamma=-1.0), ValueError, r"Invalid gamma value: -1\.0; expected a finite float >= 0"),
        Row(entry, dict(gamma=NAN), ValueError, r"Invalid gamma value: nan"),
        Row(entry, dict(gamma=torch.tensor(True)), TypeError, r"Invalid gamma value: tensor\(True\) \(a bool tensor\)"),
        Row(entry, dict(gamma=torch.tensor(0.1 + 1j)), TypeError, r"Invalid gamma value: tensor\(0\.1000\+1\.j.*\(a complex tensor\)"),
        Row(entry, dict(gamma=0.5j), TypeError, r"Invalid gamma value: 0\.5j \(a complex number\)"),
        Row(entry, dict(sigma0="he"), ValueError, r"Invalid sigma0 value: 'he'"),
        Row(entry, dict(d_spread=1.5), ValueError, r"Invalid d_spread value: 1\.5; expected 0 <= d_spread < 1"),
        Row(entry, dict(seed=-3), ValueError, r"Invalid seed: -3; expected an int in \[0, 2\*\*64\)"),
        Row(entry, dict(mode="fast"), ValueError, r"Invalid mode value: 'fast'; expected one of \('stored', 'seeded'\)"),
        Row(entry, dict(include=5), TypeError, r"Invalid include rule: 5"),
        Row(entry, dict(exclude=3), TypeError, r"Invalid exclude rule: 3"),
        Row(entry, dict(strict="yes"), TypeError, r"Invalid strict value: 'yes'; expected a bool"),
        Row(entry, dict(foreach=1), TypeError, r"Invalid foreach value: 1; expected None or a bool"),
        Row(entry, dict(target="best"), ValueError, r"Invalid target value: 'best'; expected one of \('random', 'init', 'pretrained'\)"),
        Row(entry, dict(rounding="up"), ValueError, r"Invalid rounding value: 'up'; expected one of \('nearest', 'stochastic'\)"),
    ]


def _callback_rows(entry: str, where: str, own: str):
    return _attach_rows(entry) + [
        Row(entry, dict(lr=0.1), TypeError, rf"Invalid argument\(s\) \['lr'\] for {re.escape(where)}; it takes \['gamma', "
            rf"'sigma0', .*'target', 'rounding', {own}\]", arg="lr"),
    ]


ROWS = _attach_rows("attach") + [
    Row("attach", dict(gamma=INF), ValueError, r"Invalid gamma value: inf"),
    Row("attach", dict(lr=3), TypeError, r"Invalid argument\(s\) \['lr'\] for syre\.attach; it takes \['gamma', 'sigma0', "
        r"'d_spread', 'seed', 'mode', 'include', 'exclude', 'strict', 'foreach', 'target', 'rounding'\]", arg="lr"),
    Row("attach", dict(gamma=[0.1]), TypeError, r"Invalid gamma value: \[0\.1\]"),
    Row("attach", dict(gamma=True), TypeError, r"Invalid gamma value: True"),
    Row("attach", dict(gamma=torch.tensor([0.1])), TypeError, r"Invalid gamma value: tensor\(\[0\.1000\]\) \(a Tensor of shape \(1,\)\)"),
    Row("attach", dict(sigma0=-0.5), ValueError, r"Invalid sigma0 value: -0\.5"),
    Row("attach", dict(sigma0=NAN), ValueError, r"Invalid sigma0 value: nan"),
    Row("attach", dict(sigma0="glorot"), ValueError, r"Invalid sigma0 value: 'glorot'; expected one of \['kaiming', 'lecun', 'xavier'\]"),
    Row("attach", dict(sigma0=lambda n, p: -1.0), ValueError,
        r"Invalid sigma0 value -1\.0 returned by the sigma0 callable for parameter '0\.weight'"),
    Row("attach", dict(d_spread=-0.1), ValueError, r"Invalid d_spread value: -0\.1"),
    Row("attach", dict(d_spread=INF), ValueError, r"Invalid d_spread value: inf"),
    Row("attach", dict(seed="0"), ValueError, r"Invalid seed: '0'"),
    Row("attach", dict(seed=1.5), ValueError, r"Invalid seed: 1\.5"),
    Row("attach", dict(mode="cached"), ValueError, r"Invalid mode value: 'cached'"),
    Row("attach", dict(exclude=[nn.Linear, 1.5]), TypeError, r"Invalid exclude rule: 1\.5"),
    Row("attach", dict(include="*.wieght"), ValueError, r"Invalid include rule '\*\.wieght': it matches no parameter"),
    Row("Syre", dict(gamma=-1), ValueError, r"Invalid gamma value: -1\.0"),
    Row("Syre", dict(lr=3), TypeError, r"Invalid argument\(s\) \['lr'\] for syre\.Syre; it takes \['gamma', .*'rounding'\]",
        arg="lr"),
    Row("MultiSyre", dict(gamma=0.1, lr=3), TypeError, r"Invalid argument\(s\) \['lr'\] for syre\.attach; it takes \['gamma', ",
        arg="lr"),
    Row("Syre", dict(seed=2**64), ValueError, r"Invalid seed: 18446744073709551616"),
    Row("Syre", dict(target="best"), ValueError, r"Invalid target value: 'best'"),
    Row("Syre", dict(gamma=0.1, target={"nope": torch.zeros(2)}), ValueError, r"Invalid target mapping: \['nope'\] are not parameters",
        arg="target"),
    Row("MultiSyre", dict(gamma=NAN), ValueError, r"Invalid gamma value: nan"),
    Row("MultiSyre", dict(rounding="x"), ValueError, r"Invalid rounding value: 'x'"),
    Row("MultiSyre", dict(gamma=0.1, mode="x"), ValueError, r"Invalid mode value: 'x'", arg="mode"),
    Row("Config", dict(gamma=-1), ValueError, r"Invalid gamma value: -1\.0"),
    Row("Config", dict(gamma=torch.tensor(True)), TypeError, r"Invalid gamma value: tensor\(True\) \(a bool tensor\)"),
    Row("Config", dict(target=3), ValueError, r"Invalid target value: 3"),
    Row("Penalty", dict(gamma=-2.0), ValueError, r"Invalid gamma value: -2\.0"),
    Row("Penalty", dict(gamma=0.1, unknown=1), TypeError, r"Invalid argument\(s\) \['unknown'\] for syre\.Penalty; it takes "
        r"\['gamma', 'sigma0', 'd_spread', 'seed', 'include', 'exclude'\]", arg="unknown"),
    Row("Penalty", dict(gamma=1j), TypeError, r"Invalid gamma value: 1j \(a complex number\)"),
    Row("Penalty", dict(gamma=torch.tensor(True)), TypeError, r"Invalid gamma value: tensor\(True\) \(a bool tensor\)"),
    Row("Penalty", dict(gamma=0.1, sigma0="he"), ValueError, r"Invalid sigma0 value: 'he'", arg="sigma0"),
    Row("Penalty", dict(gamma=0.1, d_spread=2.0), ValueError, r"Invalid d_spread value: 2\.0", arg="d_spread"),
    Row("Penalty", dict(gamma=0.1, seed=2**64), ValueError, r"Invalid seed: 18446744073709551616", arg="seed"),
    Row("reparametrize", dict(sigma0=INF), ValueError, r"Invalid sigma0 value: inf"),
    Row("reparametrize", dict(gamma=0.1), TypeError, r"Invalid argument\(s\) \['gamma'\] for syre\.reparametrize; it takes "
        r"\['sigma0', 'seed', 'd_spread', 'include', 'exclude'\]", arg="gamma"),
    Row("reparametrize", dict(d_spread=-1.0), ValueError, r"Invalid d_spread value: -1\.0"),
    Row("reparametrize", dict(exclude={}), TypeError, r"Invalid exclude rule: \{\}"),
    Row("reparametrize", dict(seed=1.5), ValueError, r"Invalid seed: 1\.5"),
    # syre.AdamW and syre.SGD take torch's arguments, and torch's checks
    Row("AdamW", dict(lr=-1.0), ValueError, r"Invalid learning rate: -1\.0", arg="learning rate"),
    Row("AdamW", dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay value: -0\.1"),
    Row("AdamW", dict(betas=(1.5, 0.9)), ValueError, r"Invalid beta parameter at index 0: 1\.5", arg="beta"),
    Row("AdamW", dict(eps=-1.0), ValueError, r"Invalid epsilon value: -1\.0", arg="epsilon"),
    Row("SGD", dict(lr=-0.1), ValueError, r"Invalid learning rate: -0\.1", arg="learning rate"),
    Row("SGD", dict(momentum=-1.0), ValueError, r"Invalid momentum value: -1\.0"),
    Row("SGD", dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay value: -1\.0"),
    # the init family
    Row("init_", dict(seed=-1), ValueError, r"Invalid seed: -1"),
    Row("init_", dict(scheme="he"), ValueError, r"Invalid scheme value: 'he'; expected one of \['kaiming', 'lecun', 'xavier'\]"),
    Row("init_", dict(scheme="normal:-1"), ValueError, r"Invalid scheme value: 'normal:-1'"),
    Row("init_", dict(scheme=3), ValueError, r"Invalid scheme value: 3"),
    Row("init_", dict(model="m"), TypeError, r"Invalid model: str; expected a torch\.nn\.Module"),
    Row("shrink_perturb_", dict(shrink=-1), ValueError, r"Invalid shrink value: -1\.0; expected a finite float >= 0"),
    Row("shrink_perturb_", dict(perturb=NAN), ValueError, r"Invalid perturb value: nan"),
    Row("shrink_perturb_", dict(perturb=torch.tensor(True)), TypeError, r"Invalid perturb value: tensor\(True\) \(a bool tensor\)"),
    Row("shrink_perturb_", dict(step=-1), ValueError, r"Invalid step value: -1; expected an int in \[0, 2\*\*32 - 1\)"),
    Row("shrink_perturb_", dict(step=1.0), ValueError, r"Invalid step value: 1\.0"),
    Row("shrink_perturb_", dict(include=["nope"]), ValueError, r"Invalid include value: \['nope'\] are not parameters"),
    Row("shrink_perturb_", dict(include="0.weight"), TypeError, r"Invalid include value: '0\.weight'; expected None or a list "
        r"of parameter names \(e\.g\. \['0\.weight'\]\)"),
    Row("shrink_perturb_", dict(scheme="he"), ValueError, r"Invalid scheme value: 'he'"),
    Row("shrink_perturb_", dict(seed="x"), ValueError, r"Invalid seed: 'x'"),
    Row("reset_units_", dict(layer="1"), ValueError, r"Invalid layer value: '1' has no plain weight"),
    Row("reset_units_", dict(layer="nope"), ValueError, r"Invalid layer value: 'nope' is not a submodule"),
    Row("reset_units_", dict(layer=nn.Linear(2, 2)), ValueError, r"Invalid layer value: the module Linear is not part of the model"),
    Row("reset_units_", dict(units=[16]), ValueError, r"Invalid units value: \[16\]; '0' has units 0 to 15"),
    Row("reset_units_", dict(units=[-1]), ValueError, r"Invalid units value: \[-1\]"),
    Row("reset_units_", dict(units=[0.5]), TypeError, r"Invalid units value: \[0\.5\] of dtype torch\.float32; expected integer "
        r"indices in \[0, 16\) or a bool mask of 16 entries"),
    Row("reset_units_", dict(units=torch.ones(3, dtype=torch.bool)), ValueError, r"Invalid units value: a bool mask of shape \(3,\)"),
    Row("reset_units_", dict(units="0"), TypeError, r"Invalid units value: '0'"),
    Row("reset_units_", dict(outgoing="0"), ValueError, r"Invalid outgoing value: '0' has no weight reading the 16 units of '0'"),
    Row("reset_units_", dict(seed=-2), ValueError, r"Invalid seed: -2"),
    Row("reset_units_", dict(scheme="he"), ValueError, r"Invalid scheme value: 'he'"),
    Row("anchor", dict(sigma0=-1.0), ValueError, r"Invalid sigma0 value: -1\.0"),
    Row("anchor", dict(name=3), TypeError, r"Invalid name: 3; expected a str"),
    Row("anchor", dict(seed=-1), ValueError, r"Invalid seed: -1"),
    Row("anchor", dict(d_spread=1.0), ValueError, r"Invalid d_spread value: 1\.0"),
    Row("anchor", dict(shape=(-2,)), ValueError, r"Invalid shape: \(-2,\); expected a sequence of ints >= 0"),
    Row("anchor", dict(shape=(2.5, 3)), TypeError, r"Invalid shape: \(2\.5, 3\); expected a sequence of ints >= 0"),
    Row("anchor", dict(shape=3), TypeError, r"Invalid shape: 3; expected a sequence of ints"),
    Row("plain_state_dict", dict(state_dict=3), TypeError, r"Invalid state_dict: expected an optimizer\.state_dict\(\).*got int"),
    Row("attached", dict(optimizer=3), TypeError, r"Invalid optimizer: 3 \(int\); expected a torch\.optim\.Optimizer"),
    Row("attached", dict(optimizer=nn.Linear(2, 2)), TypeError, r"Invalid optimizer: Linear\(.*\) \(Linear\); expected a torch\.optim"),
    Row("equivalent_gamma", dict(optimizer=3), TypeError, r"Invalid optimizer: 3 \(int\); expected a torch\.optim\.Optimizer"),
    # the framework callbacks: attach's keywords through Config, and their own
    *_callback_rows("lightning.SyreCallback", "syre.integrations.lightning.SyreCallback", "'verbose', 'monitor'"),
    Row("lightning.SyreCallback", dict(verbose="yes"), TypeError, r"Invalid verbose value: 'yes'; expected a bool"),
    Row("lightning.SyreCallback", dict(monitor=3), TypeError, r"Invalid monitor value: 3; expected None, True or a dict"),
    Row("lightning.MonitorCallback", dict(inputs=3), TypeError, r"Invalid inputs value: 3; expected a callable"),
    Row("lightning.MonitorCallback", dict(module=3), TypeError, r"Invalid module value: 3; expected the name of a submodule"),
    *_callback_rows("transformers.SyreCallback", "syre.integrations.transformers.SyreCallback", "'verbose', 'monitor'"),
    Row("transformers.SyreCallback", dict(verbose=1), TypeError, r"Invalid verbose value: 1; expected a bool"),
    Row("transformers.SyreCallback", dict(monitor=3), TypeError, r"Invalid monitor value: 3; expected None or a dict"),
    Row("transformers.MonitorCallback", dict(probe=None), ValueError, r"Invalid probe: None; a Trainer callback sees no training batch"),
    *[Row("sb3.attach", {"model": None, "gamma": 0.1, **r.kwargs}, r.error, r.match, arg=r.names)
      for r in _callback_rows("sb3.attach", "syre.integrations.sb3.attach", "'model', 'restore'")],
    Row("sb3.attach", dict(model=None), TypeError, r"missing 1 required keyword-only argument: 'gamma'", arg="gamma"),
    Row("sb3.policy_optimizers", dict(model=3), TypeError, r"Invalid model: int; expected a stable-baselines3 algorithm"),
    # syre.optax: attach's keywords through Config; those JAX cannot honour refused with the reason
    *[Row("optax.syre_decay", {"gamma": 0.1, **r.kwargs}, r.error, r.match, arg=r.names)
      for r in _attach_rows("optax.syre_decay") if next(iter(r.kwargs)) not in ("strict", "foreach", "mode", "target", "rounding")],
    Row("optax.syre_decay", dict(gamma=None), ValueError, r"Invalid gamma value: None; syre_decay has no optimizer weight_decay"),
    Row("optax.syre_decay", dict(gamma=0.1, strict=True), ValueError,
        r"Invalid argument strict=True for syre\.optax\.syre_decay: it asks that every trainable", arg="strict"),
    Row("optax.syre_decay", dict(gamma=0.1, foreach=False), ValueError,
        r"Invalid argument foreach=False for syre\.optax\.syre_decay: it picks torch's multi-tensor", arg="foreach"),
    Row("optax.syre_decay", dict(gamma=0.1, mode="stored"), ValueError,
        r"Invalid mode value: 'stored' for syre\.optax\.syre_decay \(only 'seeded'\): syre_decay regenerates", arg="mode"),
    Row("optax.syre_decay", dict(gamma=0.1, target="init"), ValueError,
        r"Invalid target value: 'init' for syre\.optax\.syre_decay \(only 'random'\)", arg="target"),
    Row("optax.syre_decay", dict(gamma=0.1, rounding="stochastic"), ValueError,
        r"Invalid rounding value: 'stochastic' for syre\.optax\.syre_decay \(only 'nearest'\)", arg="rounding"),
    Row("optax.syre_decay", dict(gamma=0.1, rounding="up"), ValueError, r"Invalid rounding value: 'up'; expected one of",
        arg="rounding"),
    Row("optax.syre_decay", dict(gamma=0.1, exclude=nn.LayerNorm), ValueError,
        r"Invalid exclude rule: .*LayerNorm.* JAX params have no module classes", arg="exclude"),
    Row("optax.syre_decay", dict(gamma=0.1, lr=0.1), TypeError,
        r"Invalid argument\(s\) \['lr'\] for syre\.optax\.syre_decay; it takes \['gamma', 'sigma0'", arg="lr"),
    Row("optax.syre_decay", dict(gamma=0.1, kernel_layout="nchw"), ValueError, r"Invalid kernel_layout value: 'nchw'",
        arg="kernel_layout"),
    Row("optax.syre_decay", dict(gamma=0.1, format_version=3), ValueError, r"format.*3", arg="format"),
    Row("optax.syre_decay", dict(gamma=0.1, sigma0="match"), ValueError, r"Invalid sigma0 value: 'match'; syre_decay reads "
        r"sigma0 at every update", arg="sigma0"),
    Row("optax.anchor", dict(sigma0=-1.0), ValueError, r"Invalid sigma0 value: -1\.0"),
    Row("optax.anchor", dict(seed=-1), ValueError, r"Invalid seed: -1"),
    Row("optax.anchor", dict(shape=(-2,)), ValueError, r"Invalid shape: \(-2,\); expected a sequence of ints >= 0"),
    Row("optax.anchor", dict(shape=(1.5,)), TypeError, r"Invalid shape: \(1\.5,\)"),
    Row("optax.sigma0s", dict(params={"w": [1.0]}, sigma0="he"), ValueError, r"Invalid sigma0 value: 'he'", arg="sigma0"),
    Row("optax.sigma0s", dict(params={"w": [1.0]}, kernel_layout="nchw"), ValueError, r"Invalid kernel_layout value: 'nchw'",
        arg="kernel_layout"),
    Row("optax.param_names", dict(params={"a.b": 1.0, "a": {"b": 2.0}}), ValueError,
        r"Invalid params: the leaves \['a'\]\['b'\] and \['a\.b'\] both have the name 'a\.b'"),
]

#: Public callables that take no user arguments to check, and why.
NOT_ENTRY_POINTS = {
    "Anchor": "a result (theta0, d) that syre.anchor and Syre.anchor return",
    "Reparametrization": "what syre.reparametrize returns (its rows are reparametrize's)",
    "optax.SyreDecayState": "syre_decay's state, built by its init",
}
#: Public callables whose argument check lives in a file another change owns: a row is still owed.
ROWS_OWED: Dict[str, str] = {}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.entry}-{r.names}-{i}" for i, r in enumerate(ROWS)])
def test_bad_arguments_are_refused_naming_the_argument_and_the_value(row):
    needs_init, call = ENTRIES[row.entry]
    setup = Setup(init=needs_init)
    with pytest.raises(row.error) as info:
        call(setup, dict(row.kwargs))
    message = str(info.value)
    assert re.search(row.match, message), f"{message!r} does not match {row.match!r}"
    assert row.names in message, f"{message!r} does not name the argument {row.names!r}"
    setup.check_unchanged()


def _public_entry_points():
    names = {n for n in syre.__all__ if callable(getattr(syre, n))
             and not (inspect.isclass(getattr(syre, n)) and issubclass(getattr(syre, n), Warning))}
    for short, (needs, module) in FRAMEWORKS.items():
        try:
            importlib.import_module(needs)
            mod = importlib.import_module(module)
        except ImportError:
            continue
        names |= {f"{short}.{n}" for n in mod.__all__ if callable(getattr(mod, n))}
    return names


def test_every_public_entry_point_has_a_row():
    public = _public_entry_points()
    with_rows = {r.entry for r in ROWS}
    missing = sorted(public - with_rows - set(NOT_ENTRY_POINTS) - set(ROWS_OWED))
    assert not missing, f"public entry points without a row in the error table: {missing}"
    assert not (set(ROWS_OWED) & with_rows), "a row owed was added: remove it from ROWS_OWED"
    assert {"attach", "Syre", "MultiSyre", "Penalty", "reparametrize", "AdamW", "SGD", "init_", "shrink_perturb_",
            "reset_units_", "optax.syre_decay"} <= with_rows


def test_every_keyword_attach_takes_is_refused_with_its_name_by_every_entry_point_that_takes_them():
    """A keyword added to syre.attach gets a bad-value row through _attach_rows, for attach and each callback."""
    from syre.config import ATTACH_KWARGS

    for entry in ("attach", "lightning.SyreCallback", "transformers.SyreCallback", "sb3.attach"):
        tried = {r.names for r in ROWS if r.entry == entry}
        assert set(ATTACH_KWARGS) <= tried, (entry, sorted(set(ATTACH_KWARGS) - tried))
