"""`tigercore bench`: memory-bandwidth ceilings, then the fused Lion/Tiger steps (every dtype and
precision mode) against the reference, a torch._foreach Lion, a torch.compile'd Lion, torch's
fused AdamW and every installed peer, and the Analytic-DPM reductions; a table, JSON and a PNG.
Defaults take about a minute on 2 cores; --full runs the GPT-2-small and 1B shape lists.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import arg, command


def _shape_sets(args):
    from ..benchmarks import shapes
    if args.shapes:
        names = args.shapes.split(",")
    else:
        names = ["gpt2-small", "gpt-1b"] if args.full else [f"flat:{args.numel}"]
    out = []
    for name in names:
        if name.startswith("flat:"):
            out.append((name, shapes.flat(int(float(name[5:])))))
        elif name in shapes.SHAPE_SETS:
            out.append((name, shapes.SHAPE_SETS[name]()))
        else:
            raise SystemExit(f"tigercore bench: unknown shape set {name!r} (gpt2-small, gpt-1b, flat:N)")
    return out


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@command("bench", "benchmark the kernels against baselines, peers and the memory-bandwidth limit",
         arg("--out", default="tigercore-bench", help="output directory for bench.json and bench.png"),
         arg("--full", action="store_true", help="GPT-2-small and 1B-parameter shape lists"),
         arg("--shapes", default=None, help="comma list: gpt2-small, gpt-1b, flat:N"),
         arg("--numel", default=1 << 24, type=int, help="size of the default flat tensor"),
         arg("--dtypes", default="fp32,bf16", help="parameter dtypes: fp32, bf16, fp16"),
         arg("--modes", default=None, help="precision modes for bf16/fp16 (default: master; --full: all)"),
         arg("--threads", default=None, help="comma list of CPU thread counts (default: torch's)"),
         arg("--repeats", default=5, type=int, help="timed repeats per candidate"),
         arg("--device", default=None, help="cpu or cuda (default: cuda if available)"),
         arg("--no-peers", action="store_true", help="skip installed peer optimizers"),
         arg("--no-compile", action="store_true", help="skip the torch.compile baseline"),
         arg("--no-dpm", action="store_true", help="skip the Analytic-DPM reductions"),
         arg("--memory", action="store_true", help="instead: bytes per parameter of a training step "
             "(persistent and peak) and step time against AdamW, for each optimizer configuration"))
def run(args) -> int:
    if args.memory:
        from ..benchmarks import memory
        return memory.run_cli(args)
    from ..benchmarks import ceilings, optim as bo, report
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    dtypes = [_DTYPES[d] for d in args.dtypes.split(",")]
    modes = args.modes.split(",") if args.modes else (["master", "kahan", "stochastic", "none"] if args.full else ["master"])
    t0 = time.perf_counter()
    result = {"header": report.header(device), "ceilings": {}, "optim": [], "dpm": None}
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads[-1])
        result["ceilings"] = ceilings.ceilings(device=device)
        c = result["ceilings"]
        print(f"tigercore bench on {device} ({result['header']['cpu']}, ISA {result['header']['cpu_isa']}), "
              f"torch {torch.__version__}")
        print(f"memory bandwidth ({threads[-1]} threads): copy {c['copy']:.1f} GB/s, in-place axpy "
              f"{c['axpy']:.1f} GB/s, read {c['read']:.1f} GB/s\n")
        for set_name, shape_list in _shape_sets(args):
            for dtype in dtypes:
                for mode in (modes if dtype != torch.float32 else ["-"]):
                    for nt in threads:
                        torch.set_num_threads(nt)
                        params = bo.make_params(shape_list, dtype, device)
                        first = dtype != torch.float32 and mode != modes[0]
                        small = sum(p.numel() for p in params) <= (1 << 24)  # the reference is slow
                        cands = bo.candidates(precision=mode if mode != "-" else "master",
                                              include_reference=small and dtype == torch.float32,
                                              include_compiled=not args.no_compile and not first,
                                              include_peers=not args.no_peers and not first,
                                              low_precision=dtype != torch.float32 and not first)
                        if first:  # other precision modes: tigercore only
                            cands = [cd for cd in cands if cd.name.startswith("tigercore")]
                        rows = [bo.run_candidate(cd, params, device, repeats=args.repeats if "reference" not in cd.name else 1)
                                for cd in cands]
                        # the ceiling with this thread count, measured right after the rows it judges
                        local = ceilings.ceilings(device=device, repeats=5)
                        report.add_ratios(rows, local["axpy"])
                        n = sum(p.numel() for p in params)
                        title = (f"{set_name} ({n / 1e6:.1f}M params), {str(dtype)[6:]} params, fp32 momentum"
                                 + (f", precision={mode}" if mode != "-" else "") + f", {nt} thread(s); "
                                 f"axpy ceiling {local['axpy']:.1f} GB/s")
                        same = bo.lion_vs_axpy(params, mode if mode != "-" else "master") if device == "cpu" else None
                        print(report.format_table(title, rows))
                        if same:
                            print(f"tigercore Lion {same['lion_gbps']:.1f} GB/s against the in-place axpy's "
                                  f"{same['axpy_gbps']:.1f} GB/s timed in the same rounds: {same['ratio']:.0%}")
                        print()
                        result["optim"].append({"title": title, "shapes": set_name, "dtype": str(dtype),
                                                "precision": mode, "threads": nt, "ceilings": local, "rows": rows,
                                                "lion_vs_axpy_same_rounds": same})
                        del params
        torch.set_num_threads(threads[-1])
        if not args.no_dpm:
            try:
                from ..benchmarks import dpm as bd
            except ImportError:
                bd = None
            if bd is not None:
                result["dpm"] = bd.run_default(device=device, read_gbps=c["read"], full=args.full)
                print(bd.format_table(result["dpm"]) + "\n")
    finally:
        torch.set_num_threads(old_threads)
    json_path, png = report.write_outputs(Path(args.out), result)
    print(f"wrote {json_path}" + (f" and {png}" if png else "") + f" in {time.perf_counter() - t0:.0f} s")
    print("columns: ms/step median; GB/s = bytes a step must move / time; % axpy = share of the in-place "
          "axpy bandwidth measured above; tc Lion x = this row's time / tigercore Lion's; extra MB = "
          "memory allocated during one step")
    return 0
