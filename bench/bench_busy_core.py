"""Optimizer steps on a machine where another process holds a core (data-loader workers, a
shared VM): GPT-2-small shapes, fp32, torch's thread count, each step timed quiet and then with
`--busy` spinning processes running. Shows [note: one region, dynamic tasks]
(csrc/cpu/work_queue.h): a step that splits work into fixed halves, or enters many parallel
regions, waits a whole time slice for the thread whose core is taken.

    python bench/bench_busy_core.py [--busy 1] [--repeats 9] [--shapes gpt2-small|flat:N]
"""
import argparse
import multiprocessing as mp
import time

import torch

from tigercore import optim as tc_optim
from tigercore.benchmarks.optim import make_params
from tigercore.benchmarks.shapes import flat, gpt2_small
from tigercore.benchmarks.timing import interleaved_step_ms


def spin() -> None:
    while True:
        pass


CANDIDATES = {
    "tigercore Lion": lambda ps: tc_optim.Lion(ps, lr=1e-4),
    "tigercore Tiger": lambda ps: tc_optim.Tiger(ps, lr=1e-4),
    "tigercore Tiger (no guard)": lambda ps: tc_optim.Tiger(ps, lr=1e-4, nonfinite_guard=False),
    "torch AdamW (foreach)": lambda ps: torch.optim.AdamW(ps, lr=1e-4, foreach=True),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=1, help="spinning processes during the second run")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shapes", default="gpt2-small", help="gpt2-small or flat:N")
    args = ap.parse_args(argv)
    shapes = gpt2_small() if args.shapes == "gpt2-small" else flat(int(args.shapes.split(":")[1]))
    opts = {name: make(make_params(shapes, torch.float32)) for name, make in CANDIDATES.items()}
    quiet = interleaved_step_ms(opts, args.repeats)
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.2)
        busy = interleaved_step_ms(opts, args.repeats)
    finally:
        for p in spinners:
            p.terminate()
    print(f"{args.shapes}, fp32, {torch.get_num_threads()} threads; median ms per step; "
          f"'busy' = {args.busy} spinning process(es) running")
    print(f"{'candidate':28s} {'quiet':>8s} {'busy':>8s} {'busy/quiet':>10s} {'/Lion quiet':>11s} {'/Lion busy':>10s}")
    lq, lb = quiet["tigercore Lion"], busy["tigercore Lion"]
    for name in opts:
        print(f"{name:28s} {quiet[name]:8.1f} {busy[name]:8.1f} {busy[name] / quiet[name]:10.2f} "
              f"{quiet[name] / lq:11.2f} {busy[name] / lb:10.2f}")
    return {"quiet": quiet, "busy": busy}


if __name__ == "__main__":
    main()
