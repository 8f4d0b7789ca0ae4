"""JAX peer for funcrl's agent bench (`cargo bench -p funcrl-agents -- 1000`, its first line).

Times one FuncID model-based update on a CartPole-shaped batch, jit-compiled, CPU, float64:

  1. Q step: one Adam step of the soft double Q (two 4 -> 32 -> 32 -> 2 ReLU nets) on targets
     built by the world model, y_w = r_w(s, a) + gamma * m * Vbar(s'_w(s, a));
  2. Polyak update of the target nets, Qbar <- (1 - tau) Qbar + tau Q;
  3. model step: the inner loss is quadratic in the Q-values, so the adjoint is the outer gradient
     (Q - y_real) itself; the model gradient is the derivative of sum_b w_b * y_w,b with the
     weights w_b = sum_i (Q_i(s_b, a_b) - y_real,b) / B held fixed, i.e. it flows through both the
     reward head r_w and the soft value of the predicted next state Vbar(s'_w); one Adam step.

Vbar(s) = alpha * logsumexp(min(Qbar_1, Qbar_2)(s) / alpha). The world model is two ReLU MLPs
of width 3 on (s, one_hot(a)): s' = s + net_s(x) and r = net_r(x). Batch 256, alpha = 0.01,
gamma = 0.99, tau = 0.01, Adam lr 1e-3 for Q and model. The batch is synthetic
(s ~ N(0, 1), r = 1, s' = s + 0.01 * noise, m = 1), the same kind funcrl's bench uses.

Usage:   python3 rl_jax.py [n]          (n timed updates after a compile/warm-up call; 2000)
Output:  # jax <version> backend=<cpu> f64 B=256
         us_per_update <value>
         s_per_1k_updates <value>
"""
import sys
import time

import jax
import jax.numpy as jnp
import jax.scipy.special
import optax

jax.config.update("jax_enable_x64", True)

BATCH, OBS, ACTIONS = 256, 4, 2
Q_HIDDEN, MODEL_HIDDEN = (32, 32), (3, 3)
ALPHA, GAMMA, TAU, LR = 0.01, 0.99, 0.01, 1e-3


def init_mlp(key, widths):
    """Uniform(+-1/sqrt(fan_in)) weights and biases, as PyTorch's default (and funcrl's)."""
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / jnp.sqrt(fan_in)
        layers.append({
            "w": jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
        })
    return layers


def apply_mlp(layers, x):
    *hidden, last = layers
    for layer in hidden:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ last["w"] + last["b"]


def taken(q_all, onehot):
    """Q(s, a) for the taken actions, one row per batch entry."""
    return (q_all * onehot).sum(-1)


def soft_value(target, s):
    """Vbar(s) = alpha * logsumexp(min(Qbar_1, Qbar_2)(s) / alpha)."""
    q_min = jnp.minimum(apply_mlp(target[0], s), apply_mlp(target[1], s))
    return ALPHA * jax.scipy.special.logsumexp(q_min / ALPHA, axis=-1)


def model_target(model, target, s, onehot, mask):
    """y_w = r_w + gamma * m * Vbar(s'_w), the inner problem's regression target."""
    x = jnp.concatenate([s, onehot], axis=-1)
    next_s = s + apply_mlp(model["next"], x)
    reward = apply_mlp(model["reward"], x)[:, 0]
    return reward + GAMMA * mask * soft_value(target, next_s)


def q_loss(q, y, s, onehot):
    """1/2 sum_i mean_b (Q_i(s, a) - y)^2."""
    return sum(0.5 * ((taken(apply_mlp(qi, s), onehot) - y) ** 2).mean() for qi in q)


q_adam = optax.adam(LR)
model_adam = optax.adam(LR)


@jax.jit
def funcid_update(state, batch):
    q, target, model, q_opt, model_opt = state
    s, onehot, r, s_next, mask = batch

    # 1. Q step on the model's targets (the model is a constant here).
    y_model = jax.lax.stop_gradient(model_target(model, target, s, onehot, mask))
    q_grad = jax.grad(q_loss)(q, y_model, s, onehot)
    updates, q_opt = q_adam.update(q_grad, q_opt, q)
    q = optax.apply_updates(q, updates)

    # 2. Polyak averaging of the target nets.
    target = jax.tree_util.tree_map(lambda t, p: (1.0 - TAU) * t + TAU * p, target, q)

    # 3. Closed-form adjoint: the outer residuals on real data at the new Q.
    y_real = r + GAMMA * mask * soft_value(target, s_next)
    residual = sum(taken(apply_mlp(qi, s), onehot) - y_real for qi in q)
    weights = jax.lax.stop_gradient(residual) / BATCH

    def surrogate(m):
        return (weights * model_target(m, target, s, onehot, mask)).sum()

    model_grad = jax.grad(surrogate)(model)
    updates, model_opt = model_adam.update(model_grad, model_opt, model)
    model = optax.apply_updates(model, updates)
    return q, target, model, q_opt, model_opt


def initial_state(seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    q_widths = (OBS, *Q_HIDDEN, ACTIONS)
    q = [init_mlp(keys[0], q_widths), init_mlp(keys[1], q_widths)]
    target = jax.tree_util.tree_map(jnp.copy, q)
    model_in = OBS + ACTIONS
    model = {
        "next": init_mlp(keys[2], (model_in, *MODEL_HIDDEN, OBS)),
        "reward": init_mlp(keys[3], (model_in, *MODEL_HIDDEN, 1)),
    }
    return q, target, model, q_adam.init(q), model_adam.init(model)


def synthetic_batch(seed=1):
    k_s, k_a, k_n = jax.random.split(jax.random.PRNGKey(seed), 3)
    s = jax.random.normal(k_s, (BATCH, OBS))
    actions = jax.random.randint(k_a, (BATCH,), 0, ACTIONS)
    onehot = jax.nn.one_hot(actions, ACTIONS)
    r = jnp.ones(BATCH)
    s_next = s + 0.01 * jax.random.normal(k_n, (BATCH, OBS))
    mask = jnp.ones(BATCH)
    return s, onehot, r, s_next, mask


def main(argv):
    n = int(argv[0]) if argv else 2000
    state, batch = initial_state(), synthetic_batch()
    state = funcid_update(state, batch)  # compile and warm up
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(n):
        state = funcid_update(state, batch)
    jax.block_until_ready(state)
    per_update = (time.perf_counter() - start) / n
    print(f"# jax {jax.__version__} backend={jax.default_backend()} f64 B={BATCH} updates={n}")
    print(f"us_per_update {per_update * 1e6:.1f}")
    print(f"s_per_1k_updates {per_update * 1e3:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
