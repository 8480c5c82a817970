"""syre in JAX with optax: ``syre_decay`` in place of ``add_decayed_weights``.

    pip install 'torch-syre[jax]'
    python examples/optax_example.py

Fits a two-layer network on a synthetic regression with Adam + syre_decay (decoupled, as
AdamW), shows that the anchors are the ones torch's ``syre.attach`` uses for the same seed and
names, and that the optimizer state holds only integers.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from syre.anchors import anchor as torch_anchor
from syre.optax import param_names, sigma0s, syre_decay


def main():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (256, 8))
    y = jnp.tanh(x @ jax.random.normal(k2, (8, 1)))
    params = {
        "hidden": {"kernel": jax.random.normal(k3, (8, 32)) / jnp.sqrt(8.0), "bias": jnp.zeros(32)},
        "out": {"kernel": jnp.zeros((32, 1)), "bias": jnp.zeros(1)},
    }
    tx = optax.chain(
        optax.scale_by_adam(),
        syre_decay(0.05, sigma0="lecun", d_spread=0.1, seed=0),  # flax layout: kernels are (in, out)
        optax.scale_by_learning_rate(1e-2),
    )
    state = tx.init(params)

    def loss(p):
        h = jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - y) ** 2)

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    for i in range(300):
        params, state, value = step(params, state)
    print(f"loss after 300 steps: {float(value):.4f}")
    print("names:", param_names(params))
    print("sigma0:", {k: round(v, 5) for k, v in sigma0s(params).items()})

    s0 = sigma0s(params)["hidden.kernel"]
    t = torch_anchor(0, "hidden.kernel", (8, 32), sigma0=s0, d_spread=0.1).theta0.numpy()
    from syre.optax import anchor
    j = np.asarray(anchor(0, "hidden.kernel", (8, 32), sigma0=s0, d_spread=0.1)[0])
    print(f"theta0 of hidden.kernel, JAX vs torch: max |diff| = {np.abs(t - j).max():.2e} (sigma0 = {s0:.2e})")
    print("state dtypes:", sorted({str(a.dtype) for a in jax.tree.leaves(state[1])}))


if __name__ == "__main__":
    main()
