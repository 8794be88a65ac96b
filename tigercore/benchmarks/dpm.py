# Benchmarks of the Analytic-DPM kernels (docs/semantics-dpm.md §9; issue 5 "Benchmarks"):
# eps_stats (+ segment_moments) on bf16 inputs in GB/s against this machine's read bandwidth,
# measured in the same run, and against the torch baseline eps.float().pow(2).mean(1) + index_add_;
# minplus_dp at N = 1000, K = 100 and N = 4000, K = 1000 against the reference DP.
# Usage: python bench/bench_dpm.py [--threads 1,2] [--reps 10] [--only reduce|dp] [--json]; the
# short default set also runs inside `python -m tigercore bench` (run_default, format_table).
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

import tigercore
from tigercore.dpm import NoiseSchedule
from tigercore.reference import dpm as ref

_OPS = torch.ops.tigercore
_FLUSH: dict = {}


def flush_caches(nbytes: int = 96 << 20) -> None:
    """Evict the last-level cache by writing a buffer well above its size (32 MB here)."""
    buf = _FLUSH.get(nbytes)
    if buf is None:
        buf = _FLUSH[nbytes] = torch.empty(nbytes // 4, dtype=torch.int32)
    buf.fill_(1)


def time_it(fn, reps: int, cold: bool) -> dict:
    """Best and median wall time of fn over reps calls (after one warm-up), the cache flushed
    before each call if cold. The best is the capability measure on a shared machine."""
    return time_round_robin({"fn": fn}, reps, cold)["fn"]


def time_round_robin(fns: dict, reps: int, cold: bool) -> dict:
    """time_it for several functions at once, called in turn within each round, so that all of them
    see the same minutes of this shared machine's bandwidth (which swings up to 2x between
    minutes): ratios between them are then ratios of the same conditions."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if cold:
                flush_caches()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"best": min(t), "median": statistics.median(t)} for name, t in times.items()}


def read_kernels(nbytes: int) -> dict:
    """Read-only kernels over nbytes that read every byte once and do almost no arithmetic (torch
    count_nonzero / amax / sum at the current thread count, and numpy's single-threaded max and
    bitwise-or reduction, which stay fast when a neighbour holds a core)."""
    x = torch.randn(nbytes // 4)
    xi, xn = x.view(torch.int32), x.numpy()
    xu = xn.view(np.uint64)
    return {"torch.count_nonzero": lambda: torch.count_nonzero(xi), "torch.amax": lambda: x.amax(),
            "torch.sum": lambda: x.sum(), "numpy.max": lambda: xn.max(),
            "numpy.bitwise_or.reduce": lambda: np.bitwise_or.reduce(xu)}


def _read_result(nbytes: int, times: dict) -> dict:
    res = {name: nbytes / t["best"] / 1e9 for name, t in times.items()}
    best = max(res, key=res.get)
    return {"GBps": res[best], "kernel": best, "all": res}


def bench_reduction(B: int, d: int, dtype=torch.bfloat16, num_steps: int = 1000, reps: int = 15,
                    cold: bool = True, with_eps: bool = False) -> dict:
    """eps_stats alone and eps_stats + segment_moments (the estimator's per-batch work) against the
    torch baseline eps.float().pow(2).mean(1) + index_add_ (y only), all reading the same inputs,
    and the read bandwidth over as many bytes ("read"), all timed round-robin in the same rounds."""
    g = torch.Generator().manual_seed(0)
    eps_pred = torch.randn(B, d, generator=g).to(dtype)
    eps = torch.randn(B, d, generator=g).to(dtype) if with_eps else None
    ts = torch.randint(1, num_steps + 1, (B,), generator=g)
    nbytes = eps_pred.numel() * eps_pred.element_size() * (2 if with_eps else 1)
    acc = torch.zeros(num_steps + 1, dtype=torch.float64)

    def baseline():
        acc.index_add_(0, ts, eps_pred.float().pow(2).mean(1).double())

    def stats():
        return _OPS.eps_stats(eps_pred, eps)

    def pipeline():
        return _OPS.segment_moments(_OPS.eps_stats(eps_pred, eps), ts, num_steps)

    out = {"shape": f"{B}x{d}", "dtype": str(dtype).replace("torch.", ""), "inputs": "eps_pred, eps" if with_eps
           else "eps_pred", "MB": nbytes / 2**20, "cold": cold}
    ours = {"eps_stats": stats, "eps_stats+segment_moments": pipeline, "torch baseline": baseline}
    reads = read_kernels(nbytes)
    times = time_round_robin({**ours, **reads}, reps, cold)
    for name in ours:
        t = times[name]
        out[name] = {"ms": t["best"] * 1e3, "median_ms": t["median"] * 1e3, "GBps": nbytes / t["best"] / 1e9}
    out["read"] = _read_result(nbytes, {name: times[name] for name in reads})
    return out


def delta_curve(sch: NoiseSchedule) -> torch.Tensor:
    """δ_n of Gaussian data with s² = 0.25 (docs/semantics-dpm.md §11.1); any positive curve exercises the DP."""
    return sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar)


def bench_dp(N: int, K: int, reps: int = 1, reference: bool = True, threads=(None,)) -> dict:
    """minplus_dp (native when built; at each thread count, None = torch's) and the reference DP
    (numpy, one thread) on the δ-form cost of a cosine schedule."""
    sch = NoiseSchedule.cosine(N)
    t0 = time.perf_counter()
    F = ref.delta_cost_matrix(sch.log_alpha_bar, delta_curve(sch))
    out = {"N": N, "K": K, "cost matrix s": time.perf_counter() - t0, "minplus_dp s": {}}
    default = torch.get_num_threads()
    for nt in threads:
        torch.set_num_threads(nt or default)
        out["minplus_dp s"][nt or default] = time_it(lambda: _OPS.minplus_dp(F, K, 1), reps, cold=False)["best"]
    torch.set_num_threads(default)
    if reference:
        t0 = time.perf_counter()
        C, D = ref.minplus_dp(F, K, start=1)
        out["reference s"] = time.perf_counter() - t0
        C2, D2 = _OPS.minplus_dp(F, K, 1)
        out["identical"] = bool(torch.equal(C, C2) and torch.equal(D, D2))
    return out


def busy_cpus(seconds: float = 0.5):
    """CPUs kept busy by other processes while this one sleeps (Linux /proc/stat), e.g. 1.0 when a
    neighbour holds one core of a shared machine; None where /proc/stat is unavailable."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]                     # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return None
    return round((1.0 - (i1 - i0) / max(1, t1 - t0)) * (os.cpu_count() or 1), 2)


def header() -> dict:
    info = tigercore.build_info()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "cpus busy with other work": busy_cpus(),
            "native": info["native_loaded"], "cpu_isa": info.get("cpu_isa_active"),
            "eps_stats kernel": "native" if tigercore.has_native("eps_stats") else "reference",
            "minplus_dp kernel": "native" if tigercore.has_native("minplus_dp") else "reference"}


def _reduction_rows(reps: int, threads: list) -> list:
    rows = []
    for nt in threads:
        torch.set_num_threads(nt)
        for B, d in ((4096, 3072), (64, 196_608)):
            for with_eps in (False, True):
                for cold in (True, False):
                    r = bench_reduction(B, d, reps=reps, cold=cold, with_eps=with_eps)
                    r["threads"] = nt
                    rows.append(r)
    return rows


def _print_reduction(rows: list) -> None:
    print("\neps_stats on bf16: GB/s of inputs read, best of reps; 'read' = the fastest read-only kernel on the")
    print("same bytes and threads, timed in the same rounds (cold: last-level cache flushed before each call;")
    print("warm: 24 MB stay in L3)")
    print(f"{'thr':>3} {'shape':>10} {'inputs':>13} {'cache':>5} {'read':>6} {'eps_stats':>9} {'x read':>6} "
          f"{'+seg_mom':>8} {'torch':>6} {'x torch':>7}")
    for r in rows:
        es, pipe, base, rd = r["eps_stats"], r["eps_stats+segment_moments"], r["torch baseline"], r["read"]["GBps"]
        print(f"{r['threads']:>3} {r['shape']:>10} {r['inputs']:>13} {'cold' if r['cold'] else 'warm':>5} {rd:6.1f} "
              f"{es['GBps']:9.1f} {es['GBps'] / rd:6.2f} {pipe['GBps']:8.1f} {base['GBps']:6.1f} "
              f"{base['ms'] / pipe['ms']:7.1f}")
    print("('x torch': eps_stats + segment_moments against eps.float().pow(2).mean(1) + index_add_, which computes y only)")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__ or "Analytic-DPM kernel benchmarks")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts for the reductions (default: 1 and torch's count)")
    p.add_argument("--reps", type=int, default=10, help="repeats per reduction measurement")
    p.add_argument("--only", choices=("reduce", "dp"), default=None)
    p.add_argument("--no-reference-dp", action="store_true", help="skip the ~10 s reference DP at N = 4000")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, default_threads}))
    res = {"header": header()}
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in res["header"].items()))
    if args.only in (None, "reduce"):
        res["reduction"] = _reduction_rows(args.reps, threads)
        torch.set_num_threads(default_threads)
        if not args.json:
            _print_reduction(res["reduction"])
    if args.only in (None, "dp"):
        res["dp"] = [bench_dp(1000, 100, reps=3, threads=threads),
                     bench_dp(4000, 1000, reference=not args.no_reference_dp, threads=threads)]
        if not args.json:
            print("\nminplus_dp: δ-form cost of a cosine schedule, F built once by reference.delta_cost_matrix;")
            print("the reference DP is numpy, one thread; 'identical' = same C and D bits")
            for r in res["dp"]:
                ref_s = r.get("reference s", float("nan"))
                native = ", ".join(f"{t} thr {v:.3f} s ({ref_s / v:.1f}x)" for t, v in r["minplus_dp s"].items())
                print(f"  N={r['N']:5d} K={r['K']:5d}: reference {ref_s:.3f} s; minplus_dp {native}; "
                      f"identical={r.get('identical')}; building F {r['cost matrix s']:.2f} s")
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    return res


def run_default(device: str = "cpu", read_gbps: float | None = None, full: bool = False) -> dict:
    """The short set `tigercore bench` runs: the two bf16 reduction shapes (cold cache) at torch's
    thread count, and the DP at N = 1000, K = 100 (and N = 4000, K = 1000 with --full)."""
    rows = []
    for B, d in ((4096, 3072), (64, 196_608)):
        r = bench_reduction(B, d, reps=5, cold=True)
        r["threads"] = torch.get_num_threads()
        rows.append(r)
    dps = [bench_dp(1000, 100, reps=3)] + ([bench_dp(4000, 1000)] if full else [])
    return {"reduction": rows, "dp": dps}


def format_table(res: dict) -> str:
    lines = ["Analytic-DPM kernels (bf16 inputs, cold cache; GB/s of inputs read)",
             f"{'shape':>10} {'read GB/s':>9} {'eps_stats':>9} {'x read':>6} {'x torch':>7}"]
    for r in res["reduction"]:
        es, pipe, base, rd = r["eps_stats"], r["eps_stats+segment_moments"], r["torch baseline"], r["read"]["GBps"]
        lines.append(f"{r['shape']:>10} {rd:9.1f} {es['GBps']:9.1f} {es['GBps'] / rd:6.2f} {base['ms'] / pipe['ms']:6.1f}x")
    for r in res["dp"]:
        ref_s = r.get("reference s", float("nan"))
        nat = next(iter(r["minplus_dp s"].values()))
        lines.append(f"minplus_dp N={r['N']} K={r['K']}: {nat:.3f} s native, {ref_s:.3f} s reference "
                     f"({ref_s / nat:.1f}x), identical={r.get('identical')}")
    lines.append("('x torch': eps_stats + segment_moments vs eps.float().pow(2).mean(1) + index_add_)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
