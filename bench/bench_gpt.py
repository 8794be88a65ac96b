"""Optimizers on the byte-level tiny GPT (tigercore.benchmarks.tiny_gpt): each optimizer at the best
of an lr sweep (same steps, data, seed, schedule), the recipe's translated lrs against the measured
best, Tiger's in-momentum accumulation against the large batch, and a prototype "cautious" Lion/Tiger
(timm / lion-pytorch masking, pure PyTorch here only). Results go to a JSON cache so that an
interrupted sweep resumes (bench/results/gpt_sweep.json, ~0.7 MB of curves, not committed); every run
ends by printing the markdown table of docs/recipe.md and writing its numbers to the small committed
bench/results/gpt_sweep_summary.json.

    python bench/bench_gpt.py                       # everything: ~80 runs of 400 steps, ~2 min each
                                                    # on 1 thread (about 3 h on the shared CPU)
    python bench/bench_gpt.py --opts adamw,lion     # a subset;  --table  only the table/summary from the cache
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's tigercore

import torch  # noqa: E402

from tigercore.benchmarks.tiny_gpt import TINY_TEST_CONFIG, GPTConfig, TinyGPT, train  # noqa: E402
from tigercore.optim import Lion, PiecewiseLinearLR, Tiger, tiger_param_groups  # noqa: E402
from tigercore.optim.recipe import (DEFAULT_FACTOR, adamw_to_lion, knots_in_micro_steps, lion_to_tiger,  # noqa: E402
                                   weight_rms)

ADAMW_WD = 0.1  # AdamW's decay; every other run decays by the same lr*wd per step as the best AdamW


# ---- prototype cautious Lion / Tiger: the plain-PyTorch runs behind docs/recipe.md's rows, kept so
# that the cached sweep stays reproducible; tigercore.optim now has cautious=True, and
# tests/test_cautious.py checks that both follow the same trajectory. -----------------------------
def _caution(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """timm Lion(caution=True): keep u where u*g > 0, rescale by 1/max(kept fraction, 1e-3)."""
    mask = (u * g > 0).to(u.dtype)
    return u * (mask / mask.mean().clamp(min=1e-3))


class PureLion(torch.optim.Optimizer):
    """Lion in plain PyTorch (automl order: decay, then the sign step), optional caution mask."""

    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0, cautious=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, cautious=cautious))

    @torch.no_grad()
    def step(self):
        for grp in self.param_groups:
            b1, b2 = grp["betas"]
            for p in grp["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                u = (m * b1 + g * (1 - b1)).sign()
                if grp["cautious"]:
                    u = _caution(u, g)
                p.mul_(1 - grp["lr"] * grp["weight_decay"]).add_(u, alpha=-grp["lr"])
                m.mul_(b2).add_(g, alpha=1 - b2)


class PureTiger(torch.optim.Optimizer):
    """Tiger (k = 1, no guard) in plain PyTorch with tiger_param_groups classes, optional caution."""

    def __init__(self, params, lr, beta=0.965, weight_decay=0.01, cautious=False):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, cautious=cautious,
                                      tiger_class=None, shrink_center=0.0))

    @torch.no_grad()
    def step(self):
        for grp in self.param_groups:
            for p in grp["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                cls = grp["tiger_class"] or ("K" if p.dim() >= 2 else "V")
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                m.mul_(grp["beta"]).add_(g, alpha=1 - grp["beta"])
                u = m.sign()
                if grp["cautious"]:
                    u = _caution(u, g)
                lr, wd = grp["lr"], grp["weight_decay"]
                if cls == "K":
                    eta = lr * p.double().pow(2).mean().sqrt().float()
                elif cls == "E":
                    eta = lr * p.double().pow(2).mean(dim=-1, keepdim=True).sqrt().float()
                else:
                    eta, wd = 0.5 * lr, 0.0
                p.sub_(eta * (u + wd * p))


# ---- optimizer factories ------------------------------------------------------------------------
def _decay_groups(model, wd):
    """Decay matrices and embeddings (ndim >= 2) only, like Tiger's classes K/E (V never decays)."""
    big = [p for p in model.parameters() if p.dim() >= 2]
    small = [p for p in model.parameters() if p.dim() < 2]
    return [dict(params=big, weight_decay=wd), dict(params=small, weight_decay=0.0)]


def factory(name: str, lr: float, decay_product: float, rms0: float, k: int = 1):
    """optimizer_factory for train(); decay_product = lr*wd per step (the best AdamW's)."""
    if name == "adamw":
        return lambda m: torch.optim.AdamW(_decay_groups(m, ADAMW_WD), lr=lr)
    lion_wd = decay_product / lr
    if name == "lion":
        return lambda m: Lion(_decay_groups(m, lion_wd), lr=lr)
    if name == "bnb_lion8bit":
        import bitsandbytes as bnb
        return lambda m: bnb.optim.Lion8bit(_decay_groups(m, lion_wd), lr=lr)
    if name == "bnb_lion32":
        import bitsandbytes as bnb
        return lambda m: bnb.optim.Lion(_decay_groups(m, lion_wd), lr=lr)
    if name == "cautious_lion":
        return lambda m: PureLion(_decay_groups(m, lion_wd), lr=lr, cautious=True)
    if name == "lion_cautious_built":  # tigercore's own option (--built-cautious)
        return lambda m: Lion(_decay_groups(m, lion_wd), lr=lr, cautious=True)
    tiger_wd = decay_product / (lr * rms0)  # K: the step lr*RMS*wd*theta matches Lion's lr*wd*theta at init
    if name == "tiger":
        return lambda m: Tiger(tiger_param_groups(m), lr=lr, weight_decay=tiger_wd, grad_accum_steps=k)
    if name == "cautious_tiger":
        return lambda m: PureTiger(tiger_param_groups(m), lr=lr, weight_decay=tiger_wd, cautious=True)
    if name == "tiger_cautious_built":
        return lambda m: Tiger(tiger_param_groups(m), lr=lr, weight_decay=tiger_wd, cautious=True)
    if name == "tiger_vsplit":  # class V (biases, norm gains) at Lion's absolute step lr*R instead of 0.5*lr
        def f(m):
            groups = tiger_param_groups(m, lr=lr, weight_decay=tiger_wd)
            for g in groups:
                if g["tiger_class"] == "V":
                    g["lr"] = 2.0 * lr * rms0
            return Tiger(groups, grad_accum_steps=k)
        return f
    raise ValueError(f"unknown optimizer {name!r}")


def schedule(opt, n_calls):
    """Warm-up from 0 over the first 10 % of the optimizer.step() calls, then linear decay to 0.1."""
    return PiecewiseLinearLR(opt, {max(1, n_calls // 10): 1.0, n_calls: 0.1})


GRIDS = {  # powers of 2; extended at the edges until the best is interior, then refined by sqrt(2)
    "adamw": [2e-3 * 2 ** i for i in range(4)],
    "lion": [2.5e-4 * 2 ** i for i in range(4)],
    "tiger": [1.25e-3] + [2.5e-3 * 2 ** i for i in range(5)],  # 1.25e-3: tiger.py's recommended range
}
BASE = {"bnb_lion8bit": "lion", "cautious_lion": "lion", "cautious_tiger": "tiger",  # swept around its best
        "tiger_vsplit": "tiger"}
PHASE_ORDER = ["adamw", "lion", "tiger", "tiger_vsplit", "bnb_lion8bit", "cautious_lion", "cautious_tiger"]


# ---- runs and cache -------------------------------------------------------------------------------
def weight_decay_for(name, lr, decay_product, rms0):
    if name == "adamw":
        return ADAMW_WD
    return decay_product / (lr * rms0) if "tiger" in name else decay_product / lr


class Runner:
    def __init__(self, args):
        self.args = args
        self.path = args.out
        self.cache = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def key(self, name, lr, k=1, batch=None, seed=None, tag=""):
        a = self.args
        seed = a.seed if seed is None else seed
        return (f"{name}|lr={lr:.6g}|k={k}|batch={batch or a.batch}|steps={a.steps}|seed={seed}|threads={a.threads}"
                + (f"|{tag}" if tag else ""))

    def get(self, name, lr, k=1, batch=None, seed=None, tag=""):
        return self.cache.get(self.key(name, lr, k, batch, seed, tag))

    def run(self, name, lr, decay_product, rms0, k=1, batch=None, seed=None, sched=schedule, tag=""):
        key = self.key(name, lr, k, batch, seed, tag)
        if key not in self.cache:
            a = self.args
            seed = a.seed if seed is None else seed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = train(factory(name, lr, decay_product, rms0, k), steps=a.steps, batch=batch or a.batch,
                          seed=seed, grad_accum_steps=k, scheduler_factory=sched, threads=a.threads,
                          eval_every=a.steps // 4)
            r.pop("model")
            r.update(name=name, lr=lr, seed=seed, tag=tag, weight_decay=weight_decay_for(name, lr, decay_product, rms0))
            self.cache[key] = r
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.cache, f)
            os.replace(tmp, self.path)
            print(f"  {name:15s} lr {lr:9.3g}  k {k}  seed {seed} {tag} train {r['train_loss_tail']:.4f}  "
                  f"val {r['val_loss']:.4f}  ({r['seconds']:.0f} s, noisy)", flush=True)
        return self.cache[key]

    def sweep(self, name, decay_product, rms0, around=None):
        """Seed a.seed: the grid (or 5 sqrt(2)-spaced lrs around ``around``), extended while the best is at
        an edge, then the best's sqrt(2) neighbours."""
        lrs = list(GRIDS[name]) if around is None else [around * 2 ** (i / 2) for i in (-2, -1, 0, 1, 2)]
        res = {lr: self.run(name, lr, decay_product, rms0) for lr in lrs}

        def best():
            return min(res, key=lambda lr: _score(res[lr]))
        for _ in range(4):
            b = best()
            if b == min(res):
                lr = b / 2
            elif b == max(res):
                lr = b * 2
            else:
                break
            res[lr] = self.run(name, lr, decay_product, rms0)
        b = best()
        for lr in (b / math.sqrt(2), b * math.sqrt(2)):
            if not any(math.isclose(lr, x, rel_tol=1e-6) for x in res):
                res[lr] = self.run(name, lr, decay_product, rms0)
        return res, best()

    def seed_mean(self, name, lr, seeds, k=1, batch=None):
        rows = [self.get(name, lr, k, batch, s) for s in seeds]
        if any(r is None for r in rows):
            return None
        vals = [_score(r) for r in rows]
        return dict(lr=lr, val=sum(vals) / len(vals), val_sd=_sd(vals), vals=vals,
                    train=sum(r["train_loss_tail"] for r in rows) / len(rows), weight_decay=rows[0]["weight_decay"])


def _sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1))


def _score(r):
    return r["val_loss"] if math.isfinite(r["val_loss"]) else float("inf")


def initial_rms(seed, config=GPTConfig()):
    torch.manual_seed(seed)
    return weight_rms(TinyGPT(config))


def self_check():
    """PureLion/PureTiger without caution track tigercore's Lion/Tiger on the tiny config."""
    def f_pt(m):
        return PureTiger(tiger_param_groups(m), lr=2e-2, weight_decay=0.1)

    def f_t(m):
        return Tiger(tiger_param_groups(m), lr=2e-2, weight_decay=0.1)

    def f_pl(m):
        return PureLion(_decay_groups(m, 0.5), lr=1e-3)

    def f_l(m):
        return Lion(_decay_groups(m, 0.5), lr=1e-3)
    kw = dict(steps=10, batch=4, config=TINY_TEST_CONFIG, threads=2)
    for a, b, label in ((f_pt, f_t, "PureTiger vs Tiger"), (f_pl, f_l, "PureLion vs Lion")):
        la, lb = train(a, **kw)["losses"], train(b, **kw)["losses"]
        diff = max(abs(x - y) for x, y in zip(la, lb))
        print(f"self-check {label}: max |loss diff| over 10 steps = {diff:.2e}")
        if diff > 1e-4:
            sys.exit(f"self-check failed: {label} differ by {diff}")


# ---- main -------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="the seed of the lr sweeps")
    ap.add_argument("--seeds", default="1,2", help="extra seeds that re-run the best lrs (empty: none)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on the shared 2-core machine 2 threads ran 7x slower)")
    ap.add_argument("--opts", default=",".join(PHASE_ORDER + ["accum"]),
                    help="comma list of " + ", ".join(PHASE_ORDER + ["accum"]))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpt_sweep.json"))
    ap.add_argument("--table", action="store_true", help="only print the table from the cache")
    ap.add_argument("--built-cautious", action="store_true",
                    help="run Lion(cautious=True) / Tiger(cautious=True) at the prototypes' best lrs (the summary's) "
                         "on --seed and print them next to the prototypes' cached val losses")
    ap.add_argument("--summary", default=os.path.join(os.path.dirname(__file__), "results", "gpt_sweep_summary.json"),
                    help="where the table's numbers go as JSON (empty: nowhere)")
    a = ap.parse_args(argv)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    runner = Runner(a)
    opts = [o for o in a.opts.split(",") if o]
    unknown = set(opts) - set(PHASE_ORDER) - {"accum"}
    if unknown:
        ap.error(f"unknown --opts {sorted(unknown)}")
    seeds = [a.seed] + [int(x) for x in a.seeds.split(",") if x.strip()]
    # AdamW first: its best lr fixes the decay product lr*wd for all others
    order = [o for o in PHASE_ORDER if o in opts]
    if "adamw" not in order:
        order.insert(0, "adamw")
    for base in BASE.values():
        if any(BASE.get(o) == base for o in order) and base not in order:
            order.insert(1, base)
    rms0 = initial_rms(a.seed)
    if a.built_cautious:
        return built_cautious(runner, a)
    print(f"tiny GPT: {a.steps} steps x {a.batch} x {GPTConfig().seq_len} bytes, sweep seed {a.seed}, "
          f"seeds {seeds}, {a.threads} thread(s); initial pooled K RMS R = {rms0:.6f}")
    if a.table:
        print_table(runner, rms0, order, seeds)
        return
    if any(o.startswith("cautious") for o in order):
        self_check()
    sweeps, bests = {}, {}
    for name in order:
        if name == "bnb_lion8bit" and not _bnb_ok():
            continue
        print(f"[{name}]", flush=True)
        decay = bests.get("adamw", 0.0) * ADAMW_WD
        sweeps[name], bests[name] = runner.sweep(name, decay, rms0, around=bests.get(BASE.get(name)))
    decay = bests["adamw"] * ADAMW_WD
    if len(seeds) > 1:
        print(f"[seeds {seeds[1:]}]", flush=True)
        for name in sweeps:
            confirmed = confirm_lrs(name, sweeps, bests, runner, seeds)
            for lr in confirmed:
                for s in seeds[1:]:
                    runner.run(name, lr, decay, rms0, seed=s)
            while name not in BASE:  # extend until the best seed mean is not at an edge of the confirmed lrs
                b = pick_best(runner, name, confirmed, seeds)["lr"]
                tried = sorted(sweeps[name])
                i = tried.index(b)
                edge = [j for j in (i - 1, i + 1) if 0 <= j < len(tried) and tried[j] not in confirmed]
                if not edge:
                    break
                for j in edge:
                    confirmed.append(tried[j])
                    for s in seeds[1:]:
                        runner.run(name, tried[j], decay, rms0, seed=s)
    if "accum" in opts:
        final = pick_best(runner, "tiger", sweeps["tiger"], seeds)
        accum(runner, final["lr"], decay, rms0)
    print_table(runner, rms0, order, seeds)


def built_cautious(runner, a):
    """The built cautious=True options on the prototypes' best lrs (gpt_sweep_summary.json), same
    decay per step (lr*wd of the summary), seed a.seed, next to the prototypes' cached val losses."""
    summary = json.load(open(a.summary))
    rms0 = summary["setup"]["initial_pooled_k_rms"]
    for proto, built in (("cautious_lion", "lion_cautious_built"), ("cautious_tiger", "tiger_cautious_built")):
        row = summary["optimizers"][proto]
        lr = row["best_lr"]
        decay = lr * row["weight_decay"] * (rms0 if "tiger" in proto else 1.0)
        r = runner.run(built, lr, decay, rms0)
        seeds = summary["setup"]["seeds"]
        want = row["val_per_seed"][seeds.index(a.seed)] if a.seed in seeds else None
        print(f"{built:22s} lr {lr:.3g} seed {a.seed}: val {r['val_loss']:.4f}   prototype: "
              f"{'-' if want is None else f'{want:.4f}'}")


def confirm_lrs(name, sweeps, bests, runner, seeds):
    """Re-run on the other seeds: a base optimizer's seed-0 best and its sqrt(2) neighbours; a variant's
    own best and its base's final best (for paired comparisons at the same lr)."""
    tried = sorted(sweeps[name])
    b = bests[name]
    if name not in BASE:
        return [lr for lr in tried if math.isclose(lr, b, rel_tol=1e-6) or
                math.isclose(lr, b * math.sqrt(2), rel_tol=1e-6) or math.isclose(lr, b / math.sqrt(2), rel_tol=1e-6)]
    base = pick_best(runner, BASE[name], sweeps[BASE[name]], seeds)["lr"]
    return sorted({b, base}, key=float)


def pick_best(runner, name, lrs, seeds):
    """The lr with the lowest seed-mean val loss among those run on every seed (else seed 0 only)."""
    means = [m for m in (runner.seed_mean(name, lr, seeds) for lr in lrs) if m]
    if not means:
        means = [m for m in (runner.seed_mean(name, lr, seeds[:1]) for lr in lrs) if m]
    return min(means, key=lambda m: m["val"])


def _bnb_ok():
    try:
        import bitsandbytes  # noqa: F401
        return True
    except Exception as e:  # report precisely and go on
        print(f"bitsandbytes unavailable: {type(e).__name__}: {e}")
        return False


def shifted_schedule(k):
    """schedule() in updates, mapped to micro-steps so that update n (1-based) uses exactly the
    multiplier that schedule() gives the n-th update without accumulation: knot u -> u*k + k - 1."""
    def f(opt, n_calls):
        u = n_calls // k
        return PiecewiseLinearLR(opt, knots_in_micro_steps({max(1, u // 10): 1.0, u: 0.1}, k))
    return f


def accum(runner, lr, decay, rms0):
    """Tiger with k = 4 micro-batches of batch/4 (accumulated in the momentum) against k = 1 with the
    whole batch (the same sequences), at lr: once with schedule()'s knots counted in micro-steps
    (the scheduler is stepped per micro-step, so update n uses PL(4n-1)), once with the knots mapped
    so that every update gets the large-batch run's multiplier."""
    print("[accum]", flush=True)
    b = runner.args.batch
    runner.run("tiger", lr, decay, rms0, k=1, batch=b)
    runner.run("tiger", lr, decay, rms0, k=4, batch=b // 4)
    runner.run("tiger", lr, decay, rms0, k=4, batch=b // 4, sched=shifted_schedule(4), tag="shifted")


def _lrs_of(cache, name, a):
    tail = f"|k=1|batch={a.batch}|steps={a.steps}|seed={a.seed}|threads={a.threads}"
    return sorted(r["lr"] for key, r in cache.items() if key.startswith(name + "|") and key.endswith(tail))


def print_table(runner, rms0, order, seeds):
    """Print the markdown table and notes of docs/recipe.md; write them as JSON to --summary."""
    a = runner.args
    summary = dict(setup=dict(steps=a.steps, batch=a.batch, seq_len=GPTConfig().seq_len, sweep_seed=a.seed,
                              seeds=seeds, threads=a.threads, initial_pooled_k_rms=rms0,
                              schedule="warm-up from 0 over 10 % of the steps, then linear to 0.1x",
                              val="mean over seeds at the lr with the lowest seed mean"),
                   optimizers={}, paired={}, accumulation=[])
    print(f"\n{a.steps} updates x {a.batch} sequences x 128 bytes, warm-up 10 % from 0 then linear to 0.1x; "
          f"val = mean over seeds {seeds} at the lr with the lowest seed mean (+- sd)\n")
    print("| optimizer | best lr | weight decay | final train loss | val loss | seed-0 sweep: lr (val loss) |")
    print("|---|---|---|---|---|---|")
    final = {}
    for name in order:
        lrs = _lrs_of(runner.cache, name, a)
        if not lrs:
            continue
        m = final[name] = pick_best(runner, name, lrs, seeds)
        sweep = ", ".join(f"{lr:.3g} ({_score(runner.get(name, lr)):.3f})" for lr in lrs)
        sd = f" +- {m['val_sd']:.3f}" if len(m["vals"]) > 1 else ""
        print(f"| {name} | {m['lr']:.3g} | {m['weight_decay']:.3g} | {m['train']:.3f} | {m['val']:.3f}{sd} | {sweep} |")
        summary["optimizers"][name] = dict(
            best_lr=m["lr"], weight_decay=m["weight_decay"], train_loss_tail=m["train"], val_loss=m["val"],
            val_sd=m["val_sd"], val_per_seed=m["vals"],
            sweep_seed0_val={f"{lr:.6g}": _score(runner.get(name, lr)) for lr in lrs},
            seed_means={f"{lr:.6g}": mm["val"] for lr in lrs if (mm := runner.seed_mean(name, lr, seeds))})
    if "adamw" in final:
        lrA = final["adamw"]["lr"]
        print(f"\nrecipe (initial pooled K RMS R = {rms0:.5f}):")
        for f in sorted({3.0, DEFAULT_FACTOR, 10.0}):
            lion = adamw_to_lion(lrA, ADAMW_WD, factor=f)
            tig = lion_to_tiger(lion["lr"], lion["weight_decay"], weights=rms0)
            print(f"  factor {f:g}: AdamW {lrA:.3g} -> Lion {lion['lr']:.3g}, Tiger {tig['lr']:.3g}")
        if "lion" in final:
            lrL = final["lion"]["lr"]
            print(f"  measured AdamW/Lion best-lr ratio {lrA / lrL:.3g}; Lion best {lrL:.3g} -> Tiger {lrL / rms0:.3g}")
        if "tiger" in final:
            lrT = final["tiger"]["lr"]
            print(f"  measured Tiger best {lrT:.3g} (= Lion-equivalent {lrT * rms0:.3g}; AdamW/that = "
                  f"{lrA / (lrT * rms0):.3g})")
    print("\npaired comparisons (same lr, same seeds; val loss, mean over seeds):")
    for var, base in BASE.items():
        for lr in sorted({float(f"{final[k]['lr']:.6g}") for k in (var, base) if k in final}):
            mv, mb = runner.seed_mean(var, lr, seeds), runner.seed_mean(base, lr, seeds)
            if mv and mb:
                d = [x - y for x, y in zip(mv["vals"], mb["vals"])]
                print(f"  {var} - {base} at lr {lr:.3g}: {sum(d) / len(d):+.3f} (per seed "
                      f"{', '.join(f'{x:+.3f}' for x in d)})")
                summary["paired"][f"{var} - {base} at lr {lr:.6g}"] = d
    small = [r for key, r in runner.cache.items() if key.startswith("tiger|") and "|k=4|" in key]
    for r in small:
        big = runner.get("tiger", r["lr"], 1, a.batch)
        if big:
            d = [abs(x - y) for x, y in zip(big["losses"], r["losses"])]
            how = ("knots mapped to the large batch's updates" if r.get("tag") == "shifted"
                   else "knots counted in micro-steps")
            print(f"\naccumulation, Tiger lr {r['lr']:.3g}: k=1 x {a.batch} sequences: val {big['val_loss']:.4f}; "
                  f"k=4 x {a.batch // 4} in the momentum, {how}: val {r['val_loss']:.4f}; |train loss difference| "
                  f"max {max(d):.3g}, first 10 updates {max(d[:10]):.3g}, last 10 {max(d[-10:]):.3g}")
            summary["accumulation"].append(dict(
                lr=r["lr"], schedule=how, val_k1=big["val_loss"], val_k4=r["val_loss"], train_diff_max=max(d),
                train_diff_first10=max(d[:10]), train_diff_last10=max(d[-10:])))
    if a.summary:
        with open(a.summary, "w") as fh:
            json.dump(summary, fh, indent=1, sort_keys=False)
            fh.write("\n")
        print(f"\nsummary written to {a.summary}")


if __name__ == "__main__":
    main()
