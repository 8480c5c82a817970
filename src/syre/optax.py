"""JAX/optax: ``syre_decay``, decoupled decay toward the same anchors as the torch entry points.

::

    import optax
    from syre.optax import syre_decay

    tx = optax.chain(
        optax.scale_by_adam(),
        syre_decay(1e-2, d_spread=0.1, seed=0),   # in place of optax.add_decayed_weights(1e-2)
        optax.scale_by_learning_rate(3e-4),
    )

``syre_decay(gamma)`` adds ``gamma * D * (params - theta0)`` to the updates, where
``optax.add_decayed_weights(gamma)`` adds ``gamma * params``. Placed before
``scale_by_learning_rate(lr)`` (as above, or as the ``weight_decay`` of ``optax.adamw``) the step
is ``params <- params - lr * (adam_update + gamma * D * (params - theta0))``: the decoupled
convention of ``syre.attach`` and of torch's AdamW, where the pull per step is ``lr * gamma``.

**Same anchors as torch.** ``theta0`` and ``D = 1 + xi`` come from the counter-based generator of
``syre.anchors`` (Philox4x32-10 keyed by ``blake2b(seed || name)``, counter = row-major element
index, anchor format 2: an integer-only normal, see ``syre.rng._format2``), written here with
``uint32`` ``jax.numpy`` operations so it runs inside ``jit`` on any backend (``syre.rng.jax``).
For the same seed, name, shape, sigma0 and ``d_spread``, the JAX and torch anchors are bitwise
equal in float32, without ``jax_enable_x64``. ``format_version=1`` gives the format-1 anchors
(Box-Muller; bitwise with ``jax_enable_x64``, within a few float32 ulps without it) to resume a
run started with them.

**Names.** A parameter's name is its key path in the params pytree, joined with ``.``: dict keys
as they are, sequence indices as numbers, attribute names of dataclass-like nodes. So
``{"enc": {"weight": w}}`` is ``enc.weight``, as torch names ``model.enc.weight``, and a flax
``{"params": {"Dense_0": {"kernel": k}}}`` is ``params.Dense_0.kernel`` (pass
``variables["params"]`` to get ``Dense_0.kernel``). ``param_names(params)`` lists them. Two leaves
whose names collide (``{"a.b": w}`` beside ``{"a": {"b": w2}}``) would share an anchor: refused,
naming both key paths.

**Keywords.** ``syre_decay`` takes ``syre.attach``'s keywords through ``syre.config.Config`` (one
validation, one error message everywhere): ``sigma0``, ``d_spread``, ``seed``, ``include`` and
``exclude`` (name patterns or callables), and ``mode="seeded"``, ``target="random"``,
``rounding="nearest"``, which are what it does. ``strict``, ``foreach`` and the other modes,
targets and roundings have no meaning here and are refused with the reason.

**State.** Only integers: a step count (for a ``gamma`` schedule) and each parameter's Philox key
(two ``uint32``). The anchors are regenerated from the key at every update and never stored, so
checkpointing the optimizer state keeps the anchors, and costs 8 bytes per parameter tensor.

**sigma0 presets and JAX kernel layouts.** ``syre_decay`` reads sigma0 at every update, from shapes
(``syre.sigma0.DEFAULT_SHAPE_SIGMA0``, ``"lecun"``, is its default); torch's default ``"match"`` reads the
initial values: resolve it once with ``table = sigma0s(params)`` (its default) and pass
``sigma0=lambda name, p: table[name]``. As in torch, ``"lecun"`` (``1 / sqrt(fan_in)``),
``"kaiming"`` (``sqrt(2 / fan_in)``) and ``"xavier"`` (``sqrt(2 / (fan_in + fan_out))``) are the
library's default scale times those init stds, and ``"lecun:X"`` is X times it; they read the
fans from the shape. JAX libraries store kernels input-first: a flax or
haiku ``Dense`` kernel is ``(in, out)`` and a ``Conv`` kernel ``(*window, in, out)``, the
transpose of torch's ``(out, in)`` and ``(out, in, *window)``. With ``kernel_layout="jax"``
(default) the fans are read as ``jax.nn.initializers`` reads them: ``fan_in = shape[-2] *
prod(shape[:-2])``, ``fan_out = shape[-1] * prod(shape[:-2])``; ``kernel_layout="torch"`` reads
torch's layout (``fan_in = shape[1] * prod(shape[2:])``, as equinox stores ``Linear`` weights).
As in torch, an embedding table (a leaf named ``embedding`` or ``embeddings``) has ``fan_in =
1``; a 1-D ``bias`` (or ``b``) takes the fan-in of its sibling ``kernel`` (or ``weight``, ``w``);
other 1-D leaves (normalisation ``scale`` and ``bias``) get ``X * 0.01``
(``syre.anchors.UNIT_SIGMA0``). Kernels whose axes are not ``(..., in, out)`` (flax
``DenseGeneral`` attention kernels ``(features, heads, head_dim)``) are read by that rule all
the same: give them a float or a callable ``(name, param) -> float`` sigma0. The same model
written in torch and in flax has transposed kernels, hence different anchors element by
element (equal in distribution): the anchors agree across frameworks for equal names and shapes.

Install: ``pip install 'torch-syre[jax]'`` (jax and optax, CPU).
"""
from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Tuple, Union

from ._optax_config import NOT_IN_JAX, ONLY_IN_JAX, jax_config, selected
from ._validate import check_shape
from .config import check_d_spread, check_nonneg_float, check_seed
from .rng.anchors import FORMAT, check_format, stream_key
from .rng.jax import check_size, generate, generate_jit, x64_enabled
from .sigma0 import (
    DEFAULT_SHAPE_SIGMA0,
    DEFAULT_SIGMA0,
    MATCH,
    UNIT_SIGMA0,
    check_sigma0_spec,
    fans_from_shape,
    parse_sigma0,
    resolve_sigma0,
    sigma0_from_fans,
    std_from_fans,
)

__all__ = ["NOT_IN_JAX", "ONLY_IN_JAX", "SyreDecayState", "anchor", "param_names", "sigma0s", "syre_decay"]

LAYOUTS = ("jax", "torch")
_KERNEL_NAMES = ("kernel", "weight", "w")
_BIAS_NAMES = ("bias", "b")
_EMBEDDING_NAMES = ("embedding", "embeddings")


def _import():
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
    except ImportError as exc:
        raise ImportError("syre.optax needs JAX, which is not installed: pip install 'torch-syre[jax]'") from exc
    return jax, jnp, np


def _import_optax():
    try:
        import optax
    except ImportError as exc:
        raise ImportError("syre.optax needs optax, which is not installed: pip install 'torch-syre[jax]'") from exc
    return optax


class SyreDecayState(NamedTuple):
    """State of ``syre_decay``: integers only.

    ``count`` (int32) counts updates for a ``gamma`` schedule; ``keys`` has the structure of the
    params, with each parameter's Philox key (``uint32[2]``, ``blake2b(seed || name)``).
    """

    count: Any
    keys: Any




def anchor(seed: int, name: str, shape, *, sigma0: float, d_spread: float = 0.0, dtype=None,
           format_version: int = FORMAT):
    """``(theta0, d)`` of parameter ``name`` as JAX arrays: ``syre.anchors.anchor`` computed in JAX.

    ``d = 1 + xi`` is the diagonal of D. ``dtype`` defaults to float32. Format 2 (default) is
    bitwise torch's in float32 without ``jax_enable_x64`` (and in float64 with it, for
    ``dtype=float64``). Format 1: with ``jax_enable_x64`` the generator works in float64 like the
    torch one and rounds once; without it, in float32 (within a few ulps).
    """
    _, jnp, np = _import()
    seed = check_seed(seed)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    shape = tuple(check_shape(shape))
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = jnp.float32 if dtype is None else dtype
    version = check_format(format_version)
    check_size(name, n)
    key = jnp.asarray(stream_key(seed, name), dtype=jnp.uint32)
    wide = (jnp.dtype(dtype) == jnp.float64) if version == 2 else x64_enabled()
    theta0, xi = generate_jit()(key, n, sigma0, d_spread, bool(wide and x64_enabled()), version)
    theta0 = jnp.zeros(shape, dtype) if theta0 is None else theta0.astype(dtype).reshape(shape)
    d = jnp.ones(shape, dtype) if xi is None else (1.0 + xi.astype(dtype)).reshape(shape)
    return theta0, d


# ----------------------------------------------------------------------------- names and sigma0
def _key_str(k) -> str:
    jax, _, _ = _import()
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        return str(k.key)
    if isinstance(k, tu.SequenceKey):
        return str(k.idx)
    if isinstance(k, tu.GetAttrKey):
        return str(k.name)
    if isinstance(k, tu.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def _path_name(path) -> str:
    return ".".join(_key_str(k) for k in path)


def _named(params):
    """``(names, leaves, treedef)`` of ``params``; two leaves whose joined names collide are refused.

    ``{"a.b": w}`` and ``{"a": {"b": w2}}`` both join to ``a.b``: they would get the same anchor.
    """
    jax, _, _ = _import()
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_path_name(p) for p, _ in flat]
    if len(set(names)) != len(names):
        first = {}
        for (path, _), name in zip(flat, names):
            if name in first:
                raise ValueError(
                    f"Invalid params: the leaves {first[name]} and {jax.tree_util.keystr(path)} both have the name "
                    f"{name!r} (key paths joined with '.'), so they would get the same anchor; rename one of the keys"
                )
            first[name] = jax.tree_util.keystr(path)
    return names, [leaf for _, leaf in flat], treedef


def param_names(params) -> List[str]:
    """The name of each leaf of ``params`` (key path joined with ``.``), in leaf order; colliding names are refused."""
    return _named(params)[0]


def _fans(name: str, shape: Tuple[int, ...], layout: str, shapes: dict) -> Optional[Tuple[int, int]]:
    parent, _, last = name.rpartition(".")
    if last in _EMBEDDING_NAMES and len(shape) >= 2:
        return 1, int(shape[-1])
    if len(shape) >= 2:
        return fans_from_shape(shape, layout)
    if last in _BIAS_NAMES:
        for k in _KERNEL_NAMES:
            sib = f"{parent}.{k}" if parent else k
            if sib in shapes and len(shapes[sib]) >= 2:
                return _fans(sib, shapes[sib], layout, shapes)
    return None


def _resolve_sigma0(spec, name: str, leaf, layout: str, shapes: dict, leaves: Optional[dict] = None) -> float:
    """sigma0 of one leaf: the presets read fans from its shape (``_fans``), the rest as in torch.

    ``"match"`` reads values: X times the RMS of the leaf (of its sibling kernel for a bias; the
    1-D rule for leaves without a fan-in); ``leaves`` maps names to arrays for the sibling lookup.
    """
    if isinstance(spec, str):
        preset, scale = parse_sigma0(spec)
        if preset == MATCH:
            fan = _fans(name, tuple(leaf.shape), layout, shapes)
            if fan is None or fan[0] <= 0:
                return scale * UNIT_SIGMA0
            src = leaf if len(leaf.shape) >= 2 else _sibling_kernel(name, leaves or {})
            value = _rms_np(src)  # a zero-initialised kernel: its fans' LeCun std, as in torch
            return scale * (value if value > 0.0 else std_from_fans("lecun", *fan))
        return sigma0_from_fans(spec, _fans(name, tuple(leaf.shape), layout, shapes))
    return resolve_sigma0(spec, name, leaf)


def _sibling_kernel(name: str, leaves: dict):
    parent = name.rpartition(".")[0]
    for k in _KERNEL_NAMES:
        sib = f"{parent}.{k}" if parent else k
        if sib in leaves and len(leaves[sib].shape) >= 2:
            return leaves[sib]
    raise KeyError(name)


def _rms_np(x) -> float:
    _, _, np = _import()
    a = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def sigma0s(params, sigma0=DEFAULT_SIGMA0, *, kernel_layout: str = "jax") -> dict:
    """``{name: sigma0}`` that ``syre_decay(..., sigma0=sigma0, kernel_layout=...)`` uses for ``params``.

    A check that the presets read a model's kernels as intended (see the module doc).
    """
    check_sigma0_spec(sigma0)
    if kernel_layout not in LAYOUTS:
        raise ValueError(f"Invalid kernel_layout value: {kernel_layout!r}; expected one of {LAYOUTS}")
    names, leaves_, _ = _named(params)
    named = list(zip(names, leaves_))
    shapes = {n: tuple(leaf.shape) for n, leaf in named}
    leaves = dict(named)
    return {n: _resolve_sigma0(sigma0, n, leaf, kernel_layout, shapes, leaves) for n, leaf in named}


# ----------------------------------------------------------------------------- the transformation
def syre_decay(
    gamma: Union[float, Callable[[Any], Any]],
    *,
    mask: Union[Any, Callable[[Any], Any], None] = None,
    kernel_layout: str = "jax",
    format_version: int = FORMAT,
    **attach_kwargs,
):
    """Add ``gamma * D * (params - theta0)`` to the updates (see the module doc for conventions).

    Args:
        gamma: decay strength, a float ``>= 0`` or a schedule ``count -> gamma`` as in
            ``optax.add_decayed_weights``. Before ``scale_by_learning_rate(lr)`` the pull per step
            is ``lr * gamma`` (AdamW's and ``syre.attach``'s decoupled convention).
        mask: as ``optax.add_decayed_weights``: a pytree of bools with the structure of (or a
            prefix of) the params, or a callable ``params -> such a pytree``; ``True`` where syre
            applies. Names are key paths in the full params tree either way.
        kernel_layout: ``"jax"`` (kernels ``(..., in, out)``, flax and haiku) or ``"torch"``
            (``(out, in, ...)``, equinox) for the fan-in of the sigma0 presets.
        format_version: the anchor format (``syre.anchors.FORMATS``): 2 (default, as every new
            ``syre.attach``), or 1 to resume a run started with format-1 anchors.
        attach_kwargs: ``syre.attach``'s keywords, validated by ``syre.config.Config``:
            ``sigma0`` (``"lecun"`` default: read from shapes at every update; for torch's default
            ``"match"``, pass the table of ``sigma0s(params)``; ``"kaiming"``, ``"xavier"`` with fans
            read per ``kernel_layout``, an absolute float, or a callable ``(name, param) -> float``),
            ``d_spread`` (eps of ``D_ii ~ Uniform(1 - eps, 1 + eps)``; 0 is basic syre), ``seed``
            (an int in ``[0, 2**64)``; equal seeds and names give the anchors ``syre.attach``
            gives in torch), ``include`` / ``exclude`` (fnmatch patterns on the names, or
            callables ``(name, leaf) -> bool``, called at trace time), and ``mode="seeded"``,
            ``target="random"``, ``rounding="nearest"`` (what syre_decay does). The keywords
            that do not apply in JAX (``strict``, ``foreach``, a class rule, another mode,
            target or rounding: ``NOT_IN_JAX``, ``ONLY_IN_JAX``) are refused with the reason.

    Returns:
        An ``optax.GradientTransformation`` whose state (``SyreDecayState``) holds only integers.
    """
    optax = _import_optax()
    jax, jnp, np = _import()
    # sigma0 is read from shapes at every update: the library default "match" needs the initial params.
    attach_kwargs.setdefault("sigma0", DEFAULT_SHAPE_SIGMA0)
    cfg = jax_config(gamma, attach_kwargs)
    if not callable(gamma):
        gamma = cfg.gamma
    sigma0, d_spread, seed = cfg.sigma0, cfg.d_spread, cfg.seed
    if isinstance(sigma0, str) and parse_sigma0(sigma0)[0] == MATCH:
        raise ValueError(
            f"Invalid sigma0 value: {sigma0!r}; syre_decay reads sigma0 at every update, when the params have moved. "
            f"Resolve it once from the initial params and pass the table: table = syre.optax.sigma0s(params, "
            f"{sigma0!r}); syre_decay(gamma, sigma0=lambda name, p: table[name])"
        )
    version = check_format(format_version)
    if kernel_layout not in LAYOUTS:
        raise ValueError(f"Invalid kernel_layout value: {kernel_layout!r}; expected one of {LAYOUTS}")

    def init_fn(params):
        names, leaves, treedef = _named(params)
        selected(cfg, names, leaves)
        for name, leaf in zip(names, leaves):
            check_size(name, int(np.prod(np.shape(leaf), dtype=np.int64)))
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(f"Parameter {name!r} has dtype {jnp.result_type(leaf)}; "
                                 "syre_decay supports floating-point parameters only")
        keys = [jnp.asarray(stream_key(seed, n), dtype=jnp.uint32) for n in names]
        return SyreDecayState(count=jnp.zeros([], jnp.int32), keys=jax.tree_util.tree_unflatten(treedef, keys))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("syre_decay needs the current params: call update(updates, state, params)")
        names, leaves, treedef = _named(params)
        u_leaves = treedef.flatten_up_to(updates)
        k_leaves = treedef.flatten_up_to(state.keys)
        count_inc = optax.safe_int32_increment(state.count)
        if not callable(gamma) and gamma == 0.0:
            return updates, SyreDecayState(count_inc, state.keys)
        g = gamma(state.count) if callable(gamma) else gamma
        chosen = selected(cfg, names, leaves)
        shapes = {n: tuple(leaf.shape) for n, leaf in zip(names, leaves)}
        out = []
        for name, p, u, k, on in zip(names, leaves, u_leaves, k_leaves, chosen):
            if not on:
                out.append(u)
                continue
            n = int(np.prod(p.shape, dtype=np.int64)) if p.shape else 1
            s0 = _resolve_sigma0(sigma0, name, p, kernel_layout, shapes)
            # Format 2 draws in the parameter's precision (float64 only for float64 parameters).
            wide = p.dtype == jnp.float64 if version == 2 else x64_enabled()
            # One generator per parameter tensor, fused with that tensor's update. (Drawing several
            # tensors at once and slicing does not help: XLA fuses the generator into every slice.)
            theta0, xi = generate(k, n, s0, d_spread, wide, version)
            work = jnp.float64 if p.dtype == jnp.float64 else jnp.float32
            diff = p.astype(work) if theta0 is None else p.astype(work) - theta0.astype(work).reshape(p.shape)
            if xi is not None:
                diff = diff + diff * xi.astype(work).reshape(p.shape)
            out.append((u.astype(work) + g * diff).astype(u.dtype))
        return jax.tree_util.tree_unflatten(treedef, out), SyreDecayState(count_inc, state.keys)

    tx = optax.GradientTransformation(init_fn, update_fn)
    if mask is not None:
        return optax.masked(tx, mask)
    return tx
