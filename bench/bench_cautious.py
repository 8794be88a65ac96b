"""What cautious masking costs (cautious=True; docs/semantics.md "Cautious masking"): the step of
tigercore Lion and Tiger with and without the mask on the same shapes, timed interleaved round by
round (this VM's bandwidth swings hit both alike); median ms per step and the ratio. The mask
needs each tensor's kept count before any element is written, so the step reads the gradient and
the momentum once more: expect up to (bytes of the step + 2 reads) / bytes of the step.

    python bench/bench_cautious.py [--dtypes float32,bfloat16] [--threads 2] [--shapes gpt2-small] [--rounds 9]
"""
import argparse

import torch

from tigercore import optim as tc_optim
from tigercore.benchmarks.optim import make_params
from tigercore.benchmarks.shapes import configurations
from tigercore.benchmarks.timing import interleaved_step_ms

CANDIDATES = {
    "Lion": lambda ps, c: tc_optim.Lion(ps, lr=1e-4, cautious=c),
    "Tiger": lambda ps, c: tc_optim.Tiger(ps, lr=1e-4, cautious=c),
}


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", default=str(torch.get_num_threads()))
    ap.add_argument("--shapes", default="gpt2-small")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'shapes':>16s} {'dtype':>8s} {'thr':>3s} {'optimizer':>9s} {'plain ms':>9s} {'cautious ms':>11s} {'ratio':>6s}")
    for spec, shapes, dname, nt in configurations(args.shapes, args.dtypes, args.threads):
        for name, make in CANDIDATES.items():
            opts = {c: make(make_params(shapes, getattr(torch, dname)), c) for c in (False, True)}
            m = interleaved_step_ms(opts, args.rounds)
            rows.append({"shapes": spec, "dtype": dname, "threads": nt, "optimizer": name,
                         "plain_ms": m[False], "cautious_ms": m[True]})
            print(f"{spec:>16s} {dname:>8s} {nt:>3d} {name:>9s} {m[False]:9.2f} {m[True]:11.2f} "
                  f"{m[True] / m[False]:6.3f}", flush=True)
            del opts
    print("bf16 rows: bf16 parameters, fp32 momentum, precision 'master' (the default).")
    return rows


if __name__ == "__main__":
    main()
