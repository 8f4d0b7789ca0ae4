"""PyTorch peer for funcrl's deep-IV timing bench (`cargo bench -p funcrl-iv --bench iv_timing`).

Times whole outer iterations of three methods on dSprites-shaped data, CPU, float64, full batch:

  dfiv           stage-2 ridge loss differentiated with autograd through both closed-form ridge
                 solves (stage 1 and stage 2) and the treatment network;
  funcid_linear  the same inner solve, then the outer gradient with respect to the stage-1
                 predictions, a linear adjoint on the instrument features solved in closed form,
                 and one backward of the cross term through the treatment network;
  funcid         as funcid_linear, but the adjoint is a network: a copy of the instrument network
                 with the linear adjoint as its head (configs/iv/dsprites_funcid.toml's
                 init = "linear"), trained by ADJOINT_STEPS Adam steps on the adjoint objective
                 over both halves before the cross term is taken at its stage-1 outputs.

All three share the inner solve: 20 Adam steps on the instrument network, whose stage-1 loss is
differentiated through the closed-form ridge head, followed by writing the exact head.

The data are random (only time matters): n rows split 50/50 into stage-1 and stage-2 halves,
treatments of 4096 "pixels", instruments of 3 values, a scalar outcome.

Usage:   python3 iv_torch.py [n] [iters] [methods] [--separate-forward]
         n = 5000, iters = 3, methods = dfiv,funcid_linear,funcid by default.

By default the treatment net runs once per outer iteration with its graph kept: the inner steps use
its detached output and the outer backward reuses the graph (as funcrl does). --separate-forward
runs it twice instead (no-grad for the inner steps, then again with gradients for the outer step).

Output (one line per item, whitespace separated, easy to parse):
    # torch <version> threads=<T> n=<n> iters=<k> forward=<shared|separate>
    iter_s <method> <t1> <t2> ...
    median_s <method> <median>
"""
import copy
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

torch.set_default_dtype(torch.float64)

PIXELS = 4096
INSTRUMENT_DIM = 3
FEATURES = 32
INNER_STEPS = 20
LR = 1e-3
WEIGHT_DECAY = 0.1
RIDGE1 = 0.1  # stage-1 ridge, on the row-mean loss (= 0.1 * N1 on the summed loss)
RIDGE2 = 0.1  # stage-2 ridge, same convention
ADJOINT_STEPS = 20  # FuncID's network adjoint: Adam steps per outer iteration
ADJOINT_LR = 1e-5


def sn_linear(d_in, d_out):
    return spectral_norm(nn.Linear(d_in, d_out))


def treatment_net():
    """4096 -> 1024 -> 512 -> 128 -> 32: ReLU, LayerNorm after the second hidden layer, and a
    LayerNorm + Tanh head (the treatment features phi_omega(t))."""
    return nn.Sequential(
        sn_linear(PIXELS, 1024), nn.ReLU(),
        sn_linear(1024, 512), nn.ReLU(), nn.LayerNorm(512),
        sn_linear(512, 128), nn.ReLU(),
        sn_linear(128, FEATURES), nn.LayerNorm(FEATURES), nn.Tanh(),
    )


def instrument_net():
    """3 -> 256 -> 128 -> 128 -> 32: ReLU, LayerNorm after the second and third hidden layers and
    before the final ReLU (the instrument features psi(z))."""
    return nn.Sequential(
        sn_linear(INSTRUMENT_DIM, 256), nn.ReLU(),
        sn_linear(256, 128), nn.ReLU(), nn.LayerNorm(128),
        sn_linear(128, 128), nn.ReLU(), nn.LayerNorm(128),
        sn_linear(128, FEATURES), nn.LayerNorm(FEATURES), nn.ReLU(),
    )


def with_bias(f):
    """[f, 1]: features with a constant column for the intercept."""
    return torch.cat([f, torch.ones(f.shape[0], 1)], dim=1)


def ridge(features, targets, lam):
    """argmin_W (1/n)||targets - features W||^2 + lam ||W||^2, by the normal equations."""
    n, p = features.shape
    gram = features.T @ features + n * lam * torch.eye(p)
    return torch.linalg.solve(gram, features.T @ targets)


class Problem:
    """Random dSprites-shaped data and the two networks with their Adam optimisers."""

    def __init__(self, n, seed=0):
        torch.manual_seed(seed)
        half = n // 2
        self.t1 = torch.rand(half, PIXELS)
        self.z1 = torch.rand(half, INSTRUMENT_DIM)
        self.z2 = torch.rand(n - half, INSTRUMENT_DIM)
        self.y2 = torch.randn(n - half, 1)
        self.treat = treatment_net()
        self.inst = instrument_net()
        self.opt_outer = torch.optim.Adam(self.treat.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.opt_inner = torch.optim.Adam(self.inst.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.head = None  # the stage-1 head W, written exactly after the inner steps

    def inner_solve(self, phi1):
        """INNER_STEPS Adam steps on the instrument net; the stage-1 loss sees the ridge head as a
        function of the features, so its gradient goes through the 33x33 solve."""
        for _ in range(INNER_STEPS):
            f1 = with_bias(self.inst(self.z1))
            w = ridge(f1, phi1, RIDGE1)
            loss = ((phi1 - f1 @ w) ** 2).mean(0).sum() + RIDGE1 * (w ** 2).sum()
            self.opt_inner.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_inner.step()
        with torch.no_grad():
            f1 = with_bias(self.inst(self.z1))
            f2 = with_bias(self.inst(self.z2))
            self.head = ridge(f1, phi1, RIDGE1)
        return f1, f2

    def outer_step(self, loss_or_none):
        if loss_or_none is not None:
            self.opt_outer.zero_grad(set_to_none=True)
            loss_or_none.backward()
        self.opt_outer.step()


def treatment_features(p, separate):
    """phi_omega(t1) for the inner steps (detached) and the graph-carrying tensor for the outer
    step (recomputed later when `separate`)."""
    if separate:
        with torch.no_grad():
            return p.treat(p.t1), None
    phi = p.treat(p.t1)
    return phi.detach(), phi


def dfiv_iteration(p, separate):
    phi_fixed, phi = treatment_features(p, separate)
    f1, f2 = p.inner_solve(phi_fixed)
    if phi is None:
        phi = p.treat(p.t1)
    # Stage 1 as a function of omega (W(phi)), then stage 2 on the predicted features.
    w = ridge(f1, phi, RIDGE1)
    design = with_bias(f2 @ w)
    u = ridge(design, p.y2, RIDGE2)
    loss = ((p.y2 - design @ u) ** 2).mean() + RIDGE2 * (u ** 2).sum()
    p.outer_step(loss)


def outer_grad_and_linear_adjoint(p, f1, f2):
    """D = dL_out/dv at the stage-2 predictions v2 = [psi(z2), 1] W, with the stage-2 ridge weights
    held at their optimum (envelope theorem: same gradient as the profiled loss), and the linear
    adjoint's head V: the inner loss 1/2 mean||v - phi||^2 has curvature 1/n1, so
    (F1^T F1 / n1 + lam I) V = -F2^T D."""
    v2 = (f2 @ p.head).requires_grad_(True)
    design = with_bias(v2)
    with torch.no_grad():
        u = ridge(design, p.y2, RIDGE2)
    outer = ((p.y2 - design @ u) ** 2).mean() + RIDGE2 * (u ** 2).sum()
    (d,) = torch.autograd.grad(outer, v2)
    n1, q = f1.shape
    v = torch.linalg.solve(f1.T @ f1 / n1 + RIDGE1 * torch.eye(q), -(f2.T @ d))
    return d, v


def cross_term_step(p, phi, a1):
    """Total gradient: d/d omega of mean <v1 - phi_omega(t1), a1> with v1 and a1 fixed; L_out does
    not depend on omega directly here."""
    if phi is None:
        phi = p.treat(p.t1)
    cross = -(phi * a1).sum() / a1.shape[0]
    p.outer_step(cross)


def funcid_linear_iteration(p, separate):
    phi_fixed, phi = treatment_features(p, separate)
    f1, f2 = p.inner_solve(phi_fixed)
    _, v = outer_grad_and_linear_adjoint(p, f1, f2)
    cross_term_step(p, phi, f1 @ v)


class NetworkAdjoint(nn.Module):
    """a(z) = [psi_a(z), 1] V: a copy of the instrument network's feature layers with a linear
    head, both trained."""

    def __init__(self, features, head):
        super().__init__()
        self.features = features
        self.head = nn.Parameter(head.detach().clone())

    def forward(self, z):
        return with_bias(self.features(z)) @ self.head


def funcid_iteration(p, separate):
    phi_fixed, phi = treatment_features(p, separate)
    f1, f2 = p.inner_solve(phi_fixed)
    d, v = outer_grad_and_linear_adjoint(p, f1, f2)
    # Started every iteration at the linear adjoint on the current features, with a fresh Adam.
    adjoint = NetworkAdjoint(copy.deepcopy(p.inst), v)
    opt = torch.optim.Adam(adjoint.parameters(), lr=ADJOINT_LR, weight_decay=WEIGHT_DECAY)
    n1 = f1.shape[0]
    z = torch.cat([p.z1, p.z2])  # both halves in one forward (LayerNorm is per row)
    for _ in range(ADJOINT_STEPS):
        a = adjoint(z)
        a1, a2 = a[:n1], a[n1:]
        # J(a) = 1/2 mean_1 ||a||^2 (curvature 1/n1 of the inner loss) + sum_2 <a, D>.
        loss = 0.5 * (a1 ** 2).sum() / n1 + (a2 * d).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        a1 = adjoint(p.z1)
    cross_term_step(p, phi, a1)


METHODS = {
    "dfiv": dfiv_iteration,
    "funcid_linear": funcid_linear_iteration,
    "funcid": funcid_iteration,
}


def main(argv):
    flags = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    unknown = [f for f in flags if f != "--separate-forward"]
    if unknown:
        sys.exit(f"unknown option(s): {' '.join(unknown)}")
    separate = "--separate-forward" in flags
    n = int(args[0]) if len(args) > 0 else 5000
    iters = int(args[1]) if len(args) > 1 else 3
    methods = args[2].split(",") if len(args) > 2 else list(METHODS)
    for m in methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} n={n} iters={iters} "
          f"forward={'separate' if separate else 'shared'}", flush=True)
    for m in methods:
        problem = Problem(n)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            METHODS[m](problem, separate)
            times.append(time.perf_counter() - start)
        print(f"iter_s {m} " + " ".join(f"{t:.3f}" for t in times))
        print(f"median_s {m} {statistics.median(times):.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
