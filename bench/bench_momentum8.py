"""8-bit momentum on a real (tiny) run: tigercore.benchmarks.tiny_gpt (byte-level GPT on the Python
standard library's sources) trained with Lion and Tiger at momentum_bits=32 and 8, and with
bitsandbytes' Lion8bit (blockwise dynamic 8-bit state, CPU) at Lion's hyperparameters. Prints the
validation loss over the run per optimizer and the optimizer-state bytes per parameter.
Reference for "tracks": the 32-bit run of the same optimizer, same seed, same batches.

    python bench/bench_momentum8.py --steps 300 --threads 1 --seeds 0
"""
from __future__ import annotations

import argparse
import math

import torch

from tigercore.benchmarks.tiny_gpt import train
from tigercore.optim import Lion, Tiger, tiger_param_groups


def _warmup(n_warm):
    def factory(opt, n_calls):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / n_warm))
    return factory


def _state_bytes(opt) -> int:
    total = 0
    for st in opt.state.values():
        if "__bnb_optimizer_quant_state__" in st:
            st = st["__bnb_optimizer_quant_state__"]
        for k, v in st.items():
            if torch.is_tensor(v) and k not in ("step", "param_stamp", "sumsq", "qmap1", "qmap2"):
                total += v.numel() * v.element_size()
    return total


def optimizers(lion_lr, tiger_lr):
    out = {
        "Lion 32-bit": lambda m: Lion(m.parameters(), lr=lion_lr, betas=(0.9, 0.99), weight_decay=0.1),
        "Lion 8-bit": lambda m: Lion(m.parameters(), lr=lion_lr, betas=(0.9, 0.99), weight_decay=0.1, momentum_bits=8),
        "Tiger 32-bit": lambda m: Tiger(tiger_param_groups(m), lr=tiger_lr, beta=0.965, weight_decay=0.01),
        "Tiger 8-bit": lambda m: Tiger(tiger_param_groups(m), lr=tiger_lr, beta=0.965, weight_decay=0.01,
                                       momentum_bits=8),
    }
    try:
        import bitsandbytes as bnb
        out["bnb Lion8bit"] = lambda m: bnb.optim.Lion8bit(m.parameters(), lr=lion_lr, betas=(0.9, 0.99),
                                                           weight_decay=0.1, min_8bit_size=0)
    except ImportError as e:  # reported in the table
        print(f"bitsandbytes not importable ({e}); its row is left out")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--lion-lr", type=float, default=1e-3)
    ap.add_argument("--tiger-lr", type=float, default=2e-2)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args(argv)
    rows = {}
    for name, factory in optimizers(args.lion_lr, args.tiger_lr).items():
        for seed in args.seeds:
            holder = {}

            def make(model, factory=factory):
                holder["opt"] = factory(model)
                return holder["opt"]

            r = train(make, steps=args.steps, seed=seed, threads=args.threads, eval_every=args.eval_every,
                      scheduler_factory=_warmup(args.warmup))
            rows.setdefault(name, []).append((r, _state_bytes(holder["opt"]) / r["params"]))
            print(f"{name:14s} seed {seed}: val {r['val_loss']:.4f} ({r['seconds']:.1f} s)", flush=True)
    points = [u for u, _ in rows[next(iter(rows))][0][0]["val_curve"]]
    print(f"\nval loss (nats/byte) over the run, {args.steps} steps, batch 16 x 128, threads {args.threads}, "
          f"seeds {args.seeds} (mean)")
    print("| optimizer | " + " | ".join(f"step {u}" for u in points) + " | state B/param |")
    print("|---|" + "---|" * (len(points) + 1))
    for name, runs in rows.items():
        curve = [sum(r["val_curve"][i][1] for r, _ in runs) / len(runs) for i in range(len(points))]
        cells = " | ".join("nan" if math.isnan(v) else f"{v:.4f}" for v in curve)
        print(f"| {name} | {cells} | {runs[0][1]:.3f} |")


if __name__ == "__main__":
    main()
