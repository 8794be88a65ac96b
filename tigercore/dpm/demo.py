# Analytic-DPM end to end on a toy distribution with an exact ε-model (no training, CPU, < 1 min).
# Data: 8-bit levels (uniform on c_k = −1 + 2k/255, docs/semantics-dpm.md §11.4) or Rademacher (±1, §11.3), i.i.d.
# over d dims; the exact ε*(x_n) = (x_n − √ᾱ E[x_0|x_n])/√β̄ uses the posterior over the support.
# Steps: estimate δ = 1 − Γ (GammaEstimator), print the variance table against quadrature, find the
# optimal trajectory (DP), sample, compare NELBO (bits/dim) of Analytic vs β and β̃, write a PNG.
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Optional, Sequence

import torch
from torch import Tensor

from .gamma import GammaEstimator
from .nll import nelbo
from .sampler import AnalyticSampler
from .schedule import NoiseSchedule
from .trajectory import linear_trajectory, optimal_trajectory, trajectory_kl_per_dim
from .variance import reverse_variance


class DiscreteToy:
    """x_0 with i.i.d. coordinates uniform on ``support`` (values in [−1, 1])."""

    def __init__(self, name: str, support: Tensor):
        self.name, self.support = name, support.to(torch.float64)
        self.entropy_bits = math.log2(support.numel())

    @classmethod
    def make(cls, name: str) -> "DiscreteToy":
        if name == "levels":
            return cls("levels", -1.0 + 2.0 * torch.arange(256, dtype=torch.float64) / 255.0)
        if name == "rademacher":
            return cls("rademacher", torch.tensor([-1.0, 1.0], dtype=torch.float64))
        raise ValueError(f"unknown data {name!r}")

    def sample(self, n: int, d: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, self.support.numel(), (n, d), generator=generator)
        return self.support[idx]

    def posterior(self, x: Tensor, a, b, with_var: bool = False):
        """E[x_0|x_n = x] (and Var[x_0|x_n = x] if ``with_var``) per element; a = √ᾱ, b = β̄ are
        scalars or tensors broadcastable to x. The logits a·x·c_k/b − a²c_k²/(2b) (the x² term
        cancels in the softmax) are one [P, 2] @ [2, L] product."""
        c = self.support.to(x.dtype)
        a, b = torch.as_tensor(a, dtype=x.dtype), torch.as_tensor(b, dtype=x.dtype)
        u = (x * a / b).reshape(-1, 1)
        v = (-(a * a) / (2.0 * b)).expand_as(x).reshape(-1, 1)
        w = torch.softmax(torch.cat([u, v], 1) @ torch.stack([c, c * c]), dim=-1)
        m = w @ c
        if not with_var:
            return m.reshape(x.shape), None
        var = (w * (c - m.unsqueeze(1)) ** 2).sum(-1)           # no E[c²] − m² cancellation
        return m.reshape(x.shape), var.reshape(x.shape)

    def w1_distance(self, x: Tensor) -> float:
        """Wasserstein-1 distance between the pooled coordinates of x and the data marginal."""
        xs = x.flatten().to(torch.float64).sort().values
        q = (torch.arange(xs.numel(), dtype=torch.float64) + 0.5) / xs.numel()
        ref = self.support[(q * self.support.numel()).long().clamp(max=self.support.numel() - 1)]
        return float((xs - ref).abs().mean())

    def eps_model(self, schedule: NoiseSchedule):
        """The exact ε*(x_n, n) = E[ε | x_n] (float64)."""
        def model(x: Tensor, n: Tensor) -> Tensor:
            x = x.to(torch.float64)
            a = schedule.coef("alpha_bar", n, x).sqrt()
            b = schedule.coef("beta_bar", n, x)
            m, _ = self.posterior(x, a, b)
            return (x - a * m) / b.sqrt()
        return model

    def exact_one_minus_gamma(self, schedule: NoiseSchedule, n: int, h_max: float = 0.004) -> float:
        """δ_n = (ᾱ_n/β̄_n)·E Var[x_0|x_n] by quadrature over x (docs/semantics-dpm.md §11.4, Σ w (c − m)² form;
        step min(√β̄/10, h_max), converged to ~1e-12 relative at h_max = 0.004)."""
        a, b = math.sqrt(float(schedule.alpha_bar[n])), float(schedule.beta_bar[n])
        h = min(math.sqrt(b) / 10.0, h_max)
        x = torch.arange(-a - 10 * math.sqrt(b), a + 10 * math.sqrt(b) + h, h, dtype=torch.float64)
        c = self.support
        logp = torch.logsumexp(-(x.unsqueeze(1) - a * c) ** 2 / (2 * b), 1) - math.log(c.numel()) \
            - 0.5 * math.log(2 * math.pi * b)
        _, var = self.posterior(x, a, b, with_var=True)
        return float((a * a / b) * (torch.exp(logp) * var).sum() * h)


def _fmt(x: float) -> str:
    return f"{x:.3e}" if x == x else "    nan  "


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tigercore dpm-demo",
                                description="Analytic-DPM end to end: --data digits trains an ε-model on "
                                            "scikit-learn's 8x8 digits and prints the NELBO table; the toy "
                                            "data (levels, rademacher; 'toy' = levels) use an exact ε-model.")
    p.add_argument("--data", choices=("levels", "rademacher", "toy", "digits"), default="levels",
                   help="toy data with an exact ε-model: 8-bit levels (uniform on 256 values; 'toy') or "
                        "Rademacher ±1; or 'digits': real data, a trained ε-MLP (a few minutes on 2 cores)")
    p.add_argument("--dim", type=int, default=16, help="toy: dimension d")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear", help="toy: the schedule")
    p.add_argument("--timesteps", type=int, default=1000, help="N, the length of the forward process")
    p.add_argument("--steps", type=int, default=10, help="toy: K, the number of sampling steps")
    p.add_argument("--mc", type=int, default=None,
                   help="data points M for the Γ estimate (each n); default 64 (toy), all 1500 (digits)")
    p.add_argument("--estimator", choices=("cv", "npr", "naive"), default="npr",
                   help="toy: npr (default) has relative SE √(2/(dM)) for an exact ε-model at every n; "
                        "cv/naive need far more samples in the tail (docs/semantics-dpm.md §2)")
    p.add_argument("--samples", type=int, default=500, help="toy: samples drawn and NELBO test points")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="./tigercore-dpm-demo/", help="output directory for the PNGs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the tensors are small, OpenMP would only add overhead)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("digits")
    g.add_argument("--train-steps", type=int, default=6000, help="Tiger steps (batch 256) of the ε-MLP")
    g.add_argument("--hidden", type=int, default=512, help="width of the ε-MLP")
    g.add_argument("--lr", type=float, default=1e-3, help="Tiger's peak learning rate")
    g.add_argument("--cache", default=os.path.join("~", ".cache", "tigercore"),
                   help="directory of the cached trained model (keyed by the training settings)")
    g.add_argument("--retrain", action="store_true", help="train even if a cached model exists")
    g.add_argument("--test-points", type=int, default=0, help="use only the first M held-out digits (0: all 297)")
    g.add_argument("--sample-steps", type=int, default=10, help="K of the sample grids")
    args = p.parse_args(argv)
    if args.data == "toy":
        args.data = "levels"
    if args.mc is None:
        args.mc = 100000 if args.data == "digits" else 64
    if args.data == "digits":
        if args.timesteps < 2 or args.mc < 2 or args.train_steps < 1 or not 2 <= args.sample_steps <= args.timesteps:
            p.error("need timesteps >= 2, mc >= 2, train-steps >= 1 and 2 <= sample-steps <= timesteps")
    elif args.dim < 1 or args.mc < 2 or args.samples < 1 or not 2 <= args.steps <= args.timesteps:
        p.error("need dim >= 1, mc >= 2, samples >= 1 and 2 <= steps <= timesteps")
    args.progress = not args.no_progress

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        if args.data == "digits":
            from .digits import run as run_digits
            return run_digits(args)
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    t_start = time.time()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    toy = DiscreteToy.make(args.data)
    N, K, d = args.timesteps, args.steps, args.dim
    sch = NoiseSchedule.linear(N) if args.schedule == "linear" else NoiseSchedule.cosine(N)
    model = toy.eps_model(sch)
    print(f"Analytic-DPM demo: {args.data} data, d={d}, {args.schedule} schedule N={N}, K={K}")

    # 1. δ = 1 − Γ by Monte Carlo (every n, M data points, fresh ε per (datum, n))
    est = GammaEstimator(sch, args.estimator)
    data = [toy.sample(args.mc, d, gen)]
    est.estimate(model, data, generator=gen, progress=not args.no_progress)
    table = est.result()
    shown = sorted({n for n in (1, 2, N // 100, N // 10, N // 4, N // 2, 3 * N // 4, 9 * N // 10, N - 10, N)
                    if 1 <= n <= N})
    print(f"\n1. δ_n = 1 − Γ_n ({args.estimator} estimator, M={args.mc}) and one-step variances σ²_(n−1,n)")
    print(f"{'n':>5} {'exact δ':>10} {'est. δ':>10} {'SE':>10} {'clip':>4} {'β_n':>10} {'β̃_n':>10} {'σ*² (est)':>10}")
    for n in shown:
        ex = toy.exact_one_minus_gamma(sch, n)
        bt = float(sch.tilde_beta(n - 1, n)) if n > 1 else 0.0
        var = float(reverse_variance(sch, table, n - 1, n)) if n > 1 else float("nan")
        print(f"{n:5d} {_fmt(ex)} {_fmt(float(table.one_minus_gamma[n]))} {_fmt(float(table.stderr[n]))} "
              f"{'yes' if bool(table.clipped[n]) else '':>4} {_fmt(float(sch.betas[n]))} {_fmt(bt)} {_fmt(var)}")
    print(f"clip active at {int(table.clipped.sum())} of {N} timesteps")

    # 2. trajectories
    lin = linear_trajectory(N, K).timesteps
    opt, cost = optimal_trajectory(sch, table, K)
    kl_lin, kl_opt = trajectory_kl_per_dim(sch, table, lin), trajectory_kl_per_dim(sch, table, opt)
    print("\n2. trajectories (KL per dim, Σ_k≥2, from the estimated δ)")
    print(f"   linear : {lin.tolist()}  KL/d = {kl_lin:.4f}")
    print(f"   optimal: {opt.tolist()}  KL/d = {kl_opt:.4f}  (DP cost C[K,N] = {cost:.4f})")

    # 3. sampling
    var_data = float(toy.support.var(unbiased=False))
    print(f"\n3. samples ({args.samples} × d, K={K}); data: mean 0, var {var_data:.4f}; W1 = Wasserstein-1 "
          "distance of the pooled coordinates to the data marginal")
    samples = {}
    for traj_name, traj in (("linear", lin), ("optimal", opt)):
        for v in ("analytic", "beta", "beta_tilde"):
            smp = AnalyticSampler(sch, model, one_minus_gamma=table, trajectory=traj, variance=v)
            x = smp.sample((args.samples, d), generator=gen, dtype=torch.float64)
            samples[(traj_name, v)] = x
            print(f"   {traj_name:>7} {v:>10}: mean {float(x.mean()):+.4f}  var {float(x.var()):.4f}  "
                  f"W1 {toy.w1_distance(x):.4f}")

    # 4. NELBO
    x_test = toy.sample(args.samples, d, gen)
    print(f"\n4. NELBO in bits/dim on {args.samples} test points (entropy of the data: {toy.entropy_bits:.3f})")
    bpd = {}
    for traj_name, traj in (("linear", lin), ("optimal", opt)):
        row = []
        for v in ("analytic", "beta", "beta_tilde"):
            r = nelbo(sch, model, x_test, traj, variance=v, one_minus_gamma=table, generator=gen)
            bpd[(traj_name, v)] = r.mean()
            row.append(f"{v} {r.mean()['bpd']:.3f}")
        print(f"   {traj_name:>7}: " + "   ".join(row))

    if not args.no_plot:
        path = _plot(args, sch, toy, table, lin, opt, samples, bpd)
        print(f"\nwrote {path}")
    print(f"done in {time.time() - t_start:.1f} s")
    return 0


def _plot(args, sch, toy, table, lin, opt, samples, bpd) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N = sch.num_timesteps
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    n_all = torch.arange(1, N + 1)
    a = ax[0, 0]
    a.semilogy(n_all, table.one_minus_gamma[1:].clamp(min=1e-12), ".", ms=2, label=f"estimated ({table.estimator})")
    grid = sorted(set(torch.linspace(1, N, 30).round().long().tolist()))
    a.semilogy(grid, [toy.exact_one_minus_gamma(sch, n, h_max=0.02) for n in grid], "k-", label="exact (quadrature)")
    a.set(xlabel="n", ylabel="δ_n = 1 − Γ_n", title="δ_n")
    a.legend()
    a = ax[0, 1]
    for name, traj, style in (("linear", lin, "o-"), ("optimal", opt, "s--")):
        s, t = traj[:-1], traj[1:]
        a.semilogy(t, reverse_variance(sch, table, s, t), style, color="C0", label=f"analytic σ², {name}")
        a.semilogy(t, sch.skip_beta(s, t), style, color="C1", alpha=0.6, label=f"β_(t|s), {name}")
        a.semilogy(t, sch.tilde_beta(s, t), style, color="C2", alpha=0.6, label=f"β̃(s,t), {name}")
    a.set(xlabel="t (step t → s)", ylabel="σ²", title="reverse variances along the trajectories")
    a.legend(fontsize=7)
    a = ax[1, 0]
    bins = torch.linspace(-1.3, 1.3, 80)
    for v in ("analytic", "beta", "beta_tilde"):
        a.hist(samples[("optimal", v)].flatten().numpy(), bins=bins.numpy(), histtype="step", density=True, label=v)
    a.set(xlabel="x", title=f"samples, optimal trajectory (K={args.steps})")
    a.legend()
    a = ax[1, 1]
    names = [(tr, v) for tr in ("linear", "optimal") for v in ("analytic", "beta", "beta_tilde")]
    vals = [bpd[k]["bpd"] for k in names]
    a.bar(range(len(vals)), vals, color=["C0", "C1", "C2"] * 2)
    for i, v in enumerate(vals):
        a.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
    a.axhline(toy.entropy_bits, color="k", ls=":", label="data entropy")
    a.set_yscale("log")
    a.set_xticks(range(len(vals)), [f"{tr}\n{v}" for tr, v in names], fontsize=7)
    a.set(ylabel="bits/dim (log scale)", title="NELBO")
    a.legend()
    fig.suptitle(f"Analytic-DPM demo: {toy.name}, d={args.dim}, {sch.name} N={N}, K={args.steps}")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "analytic_dpm_demo.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
