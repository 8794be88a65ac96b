"""Benchmark of the CUDA Lion/Tiger steps on GPT-2 small's parameters (124M), and its roofline.

On a GPU: CUDA-event timing with an L2 flush before every repeat (llm.c's benchmark_kernel), median
of the repeats, reported as us per step, effective GB/s (bytes the step must move) and % of the
device's measured copy bandwidth. Without a GPU it says so and exits 0; --predict prints the
roofline prediction instead (bytes per step / bandwidth, default 3.35 TB/s: H100 SXM HBM3).
Usage: python bench/bench_cuda.py [--repeats 50] [--predict [--bandwidth-tbs 3.35]]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

import torch

H100_TBS = 3.35


def gpt2_small_shapes() -> dict:
    """{tiger class: shapes} of GPT-2 small (124,439,808 parameters, tied embeddings)."""
    d, v, ctx, layers = 768, 50257, 1024, 12
    e = [(v, d), (ctx, d)]
    k = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)] * layers
    b = [(d,), (d,), (3 * d,), (d,), (d,), (d,), (4 * d,), (d,)] * layers + [(d,), (d,)]
    return {"E": e, "K": k, "V": b}


@dataclass(frozen=True)
class Config:
    algo: str           # "lion" or "tiger"
    param: torch.dtype
    momentum: torch.dtype  # torch.uint8: 8-bit momentum (codes + a float32 absmax per 256)
    precision: str = "none"

    @property
    def label(self) -> str:
        short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.uint8: "8-bit"}
        mode = "" if self.param == torch.float32 else f" {self.precision}"
        return f"{self.algo} {short[self.param]} params, {short[self.momentum]} momentum{mode}"


def bytes_per_element(c: Config, cls: str = "K", guard: bool = True) -> float:
    """Bytes a step must read and write per element (no GradScaler): the update reads g, m and the
    working weight (master copy, or theta; Kahan also its compensation) and writes them back
    (master: and theta); Tiger's stage 1 also reads the working weight (K/E) and g (guard).
    8-bit momentum: 1 byte of code plus 4/256 of absmax, each way."""
    p = torch.finfo(c.param).bits // 8
    m = 1 + 4 / 256 if c.momentum == torch.uint8 else torch.finfo(c.momentum).bits // 8
    half = c.param != torch.float32
    w = 4 if half and c.precision == "master" else p
    update = p + 2 * m + 2 * w + (p if half and c.precision == "master" else 0)
    update += 2 * p if half and c.precision == "kahan" else 0
    if c.algo == "lion":
        return update
    return update + (w if cls in ("K", "E") else 0) + (p if guard else 0)


def bytes_per_step(c: Config) -> int:
    n = 0
    for cls, shapes in gpt2_small_shapes().items():
        elems = sum(torch.Size(s).numel() for s in shapes)
        n += elems * bytes_per_element(c, cls if c.algo == "tiger" else "K")
    return n


CONFIGS = [Config("lion", torch.float32, torch.float32),
           Config("lion", torch.bfloat16, torch.float32, "none"),
           Config("lion", torch.bfloat16, torch.float32, "kahan"),
           Config("lion", torch.bfloat16, torch.float32, "master"),
           Config("tiger", torch.float32, torch.float32),
           Config("tiger", torch.bfloat16, torch.float32, "none"),
           Config("tiger", torch.bfloat16, torch.float32, "master"),
           Config("lion", torch.float32, torch.uint8),
           Config("lion", torch.bfloat16, torch.uint8, "stochastic"),
           Config("tiger", torch.float32, torch.uint8),
           Config("tiger", torch.bfloat16, torch.uint8, "stochastic")]


def predict(bandwidth_tbs: float) -> None:
    n = sum(torch.Size(s).numel() for shapes in gpt2_small_shapes().values() for s in shapes)
    print(f"Roofline PREDICTION (not a measurement): GPT-2 small, {n:,} parameters, one optimizer step, "
          f"{bandwidth_tbs} TB/s")
    print("| configuration | bytes/param | MB per step | predicted time |")
    print("|---|---|---|---|")
    for c in CONFIGS:
        b = bytes_per_step(c)
        print(f"| {c.label} | {b / n:.2f} | {b / 1e6:.0f} | {b / (bandwidth_tbs * 1e12) * 1e3:.3f} ms |")


class Timer:
    """CUDA events around fn(), an L2 flush (a write of twice the L2 size) before each repeat."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.flush = torch.empty(max(2 * l2, 1 << 24), dtype=torch.uint8, device="cuda")

    def __call__(self, fn) -> float:
        fn()  # warm-up (first-call allocations)
        times = []
        for _ in range(self.repeats):
            self.flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3)
        return statistics.median(times)


def copy_bandwidth(timer: Timer) -> float:
    """Bytes/s of a device-to-device copy (read + write) of 1 GiB (less on small devices)."""
    n = min(1 << 30, torch.cuda.get_device_properties(0).total_memory // 8)
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * n / timer(lambda: dst.copy_(src))


def make_step(c: Config, device="cuda", shapes: dict | None = None):
    """Tensors of GPT-2 small (or `shapes`, {class: shapes}) in c's dtypes on `device` and one closure
    that steps all of them (one op call per Tiger class, one Lion call), as the optimizers do."""
    calls, all_params = [], []
    by_class = shapes or gpt2_small_shapes()
    classes = by_class if c.algo == "tiger" else {"K": sum(by_class.values(), [])}
    pid = 0
    for cls, shapes in classes.items():
        params = [torch.randn(s, device=device).to(c.param) * 0.02 for s in shapes]
        all_params += params
        grads = [torch.randn_like(p) for p in params]
        moms = [torch.zeros(p.shape, dtype=c.momentum, device=device) for p in params]
        absmax = [torch.zeros((p.numel() + 255) // 256, device=device) for p in params] \
            if c.momentum == torch.uint8 else []
        aux = []
        if c.param != torch.float32 and c.precision == "master":
            aux = [p.float() for p in params]
        elif c.param != torch.float32 and c.precision == "kahan":
            aux = [torch.zeros_like(p) for p in params]
        steps = [torch.zeros((), dtype=torch.int64, device=device) for _ in params]
        ids = list(range(pid, pid + len(params)))
        pid += len(params)
        lr = torch.tensor(1e-4 if c.algo == "lion" else 1e-3, dtype=torch.float64, device=device)
        common = dict(lr=lr, maximize=False, precision=c.precision, seed=0, param_ids=ids)
        lists = (params, grads, moms, aux, steps, [])  # no stamps: external writes are not checked
        if c.algo == "lion":
            calls.append(lambda a=lists, q=absmax, k=common: torch.ops.tigercore.lion_step_(
                *a, q, beta1=0.9, beta2=0.99, weight_decay=0.1, **k))
        else:
            calls.append(lambda a=lists, q=absmax, k=common, cls=cls: torch.ops.tigercore.tiger_step_(
                *a, [], q, beta=0.965, weight_decay=0.01, grad_accum_steps=1, tiger_class=cls,
                shrink_ratio=0.99, shrink_center=0.0, nonfinite_guard=True, rms_floor=0.0, **k))
    def step():
        for f in calls:
            f()
    step.params = all_params
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--predict", action="store_true", help="print the roofline prediction (no GPU needed)")
    ap.add_argument("--bandwidth-tbs", type=float, default=H100_TBS)
    args = ap.parse_args(argv)
    if args.predict:
        predict(args.bandwidth_tbs)
        return 0
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device; nothing measured (skipped). `--predict` prints the roofline prediction.")
        return 0
    import tigercore
    info = tigercore.build_info()
    if not tigercore.has_native("lion_step_", "cuda"):
        print(f"bench_cuda: the CUDA kernels are not built ({info.get('native_error')}); nothing to measure")
        return 1
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} ({props.total_memory / 2**30:.0f} GiB, L2 {props.L2_cache_size / 2**20:.0f} MiB); "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; built for {info.get('cuda_archs')}")
    timer = Timer(args.repeats)
    bw = copy_bandwidth(timer)
    print(f"measured copy bandwidth: {bw / 1e9:.0f} GB/s (read + write); {args.repeats} repeats, median, L2 flushed")
    print("| configuration | time per step | effective GB/s | % of copy bandwidth |")
    print("|---|---|---|---|")
    for c in CONFIGS:
        step = make_step(c)
        t = timer(step)
        b = bytes_per_step(c)
        print(f"| {c.label} | {t * 1e6:.0f} us | {b / t / 1e9:.0f} | {100 * b / t / bw:.0f}% |")
        del step
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
