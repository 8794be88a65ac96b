"""Stochastic rounding against the other precision modes on bf16 (or fp16) parameters (issue 14, item 4):
Lion and Tiger with precision "master", "stochastic" and "none" (fp32 momentum), timed interleaved
round by round in one process (tigercore.benchmarks.timing.interleaved_step_ms), on GPT-2-small
shapes (124M), a small byte-level GPT (0.84M) or one large tensor (16.8M), 1 and 2 threads.
Prints median ms per step, GB/s (bytes a step must move: 16-bit param read+written and grad read,
fp32 momentum read+written, and master's fp32 copy read+written) and the stochastic/master
ratios; --json saves the rows and --compare OLD.json prints them next to an earlier run's (e.g.
the build before a change).

    python bench/bench_sr.py [--shapes gpt2-small,small-gpt,large] [--threads 1,2] [--rounds 9]
        [--algos Lion,Tiger] [--dtype bfloat16|float16] [--json out.json] [--compare old.json]
"""
import argparse
import json
import os
import warnings

import torch

from tigercore import optim as tc_optim
from tigercore.benchmarks.optim import bytes_moved, make_params
from tigercore.benchmarks.shapes import gpt2_small
from tigercore.benchmarks.timing import interleaved_step_ms

MODES = ("master", "stochastic", "none")


def small_gpt():
    """A byte-level GPT-2-style model of 0.84M parameters (the issue's small GPT is 0.83M)."""
    return gpt2_small(vocab=256, d=128, layers=4, ctx=128)


def large():
    """One 4096 x 4096 tensor (16.8M elements): far larger than the caches."""
    return [("w", (4096, 4096))]


SHAPES = {"gpt2-small": gpt2_small, "small-gpt": small_gpt, "large": large}
ALGOS = {"Lion": lambda ps, mode: tc_optim.Lion(ps, lr=1e-4, precision=mode),
         "Tiger": lambda ps, mode: tc_optim.Tiger(ps, lr=1e-3, precision=mode)}


def measure(shapes, algo: str, rounds: int, dtype=torch.bfloat16) -> dict:
    """{mode: (ms, GB/s)} for one algorithm, the three modes timed interleaved."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "none" warns once about lost small steps
        opts, params = {}, {}
        for mode in MODES:
            params[mode] = make_params(shapes, dtype)
            opts[mode] = ALGOS[algo](params[mode], mode)
        ms = interleaved_step_ms(opts, rounds)
    out = {}
    for mode in MODES:
        moved = bytes_moved([(p, opts[mode].state[p]) for p in params[mode]])
        out[mode] = {"ms": ms[mode], "gbps": moved / (ms[mode] * 1e-3) / 1e9, "bytes": moved}
    return out


def key(row):
    return (row["shapes"], row["algo"], row["threads"], row.get("dtype", "bfloat16"))


def print_rows(rows, old=None):
    old = {key(r): r for r in (old or [])}
    head = (f"{'shapes':>10s} {'algo':>5s} {'thr':>3s} | {'master ms':>9s} {'SR ms':>8s} {'none ms':>8s} | "
            f"{'master GB/s':>11s} {'SR GB/s':>8s} {'none GB/s':>9s} | {'SR/master':>9s}")
    if old:
        head += f" | {'old SR ms':>9s} {'old SR GB/s':>11s} {'old SR/master':>13s} {'SR speed-up':>11s}"
    print(head)
    for r in rows:
        m, s, n = r["master"], r["stochastic"], r["none"]
        line = (f"{r['shapes']:>10s} {r['algo']:>5s} {r['threads']:>3d} | {m['ms']:9.2f} {s['ms']:8.2f} {n['ms']:8.2f} | "
                f"{m['gbps']:11.2f} {s['gbps']:8.2f} {n['gbps']:9.2f} | {s['ms'] / m['ms']:9.2f}")
        o = old.get(key(r))
        if o:
            os_, om = o["stochastic"], o["master"]
            line += (f" | {os_['ms']:9.2f} {os_['gbps']:11.2f} {os_['ms'] / om['ms']:13.2f} "
                     f"{os_['ms'] / s['ms']:11.2f}")
        print(line, flush=True)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="gpt2-small,small-gpt")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--algos", default="Lion,Tiger")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"), help="parameter dtype")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--compare", help="rows of an earlier run (--json) to print alongside")
    args = ap.parse_args(argv)
    for name in args.shapes.split(","):
        if name not in SHAPES:
            ap.error(f"unknown shape set {name!r} (known: {', '.join(SHAPES)})")
    for name in args.algos.split(","):
        if name not in ALGOS:
            ap.error(f"unknown algorithm {name!r} (known: {', '.join(ALGOS)})")
    import tigercore
    info = tigercore.build_info()
    if not info["native_loaded"]:
        raise SystemExit(f"the native extension did not load: {info['native_error']}")
    print(f"tigercore from {os.path.dirname(tigercore.__file__)}; CPU kernels: {info.get('cpu_isa_active')}; "
          f"load average at start {os.getloadavg()}")
    rows = []
    default_threads = torch.get_num_threads()
    for spec in args.shapes.split(","):
        shapes = SHAPES[spec]()
        # small shapes: many more rounds for the same time, steadier medians
        rounds = max(args.rounds, 15) * 10 if spec == "small-gpt" else args.rounds
        for algo in args.algos.split(","):
            for nt in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(nt)
                rows.append({"shapes": spec, "algo": algo, "threads": nt, "dtype": args.dtype,
                             **measure(shapes, algo, rounds, getattr(torch, args.dtype))})
    torch.set_num_threads(default_threads)
    print_rows(rows, json.load(open(args.compare)) if args.compare else None)
    print(f"{args.dtype} parameters, fp32 momentum; load average at end {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
