"""Bytes per parameter of a training step (`python -m tigercore bench --memory`). persistent:
params + grads held at step() + optimizer state, from the tensors' storages (subclasses flattened).
peak: params + state + the most the CPU allocator holds at once for allocations of backward, step
and zero_grad (profiler allocation events: inside kernels too); forward allocations (activations)
apart. Known answers (tests/test_bench_memory.py): AdamW fp32 16 B/param, Lion 12.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from .. import _native
from .. import optim as tc_optim

# ---- counting bytes -----------------------------------------------------------------------


def _leaves(t: torch.Tensor):
    """The plain tensors holding t's data (a wrapper subclass is flattened recursively)."""
    if is_traceable_wrapper_subclass(t):
        attrs, _ = t.__tensor_flatten__()
        for a in attrs:
            yield from _leaves(getattr(t, a))
    else:
        yield t


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def storage_bytes(tensors, seen: Optional[set] = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` not already in ``seen`` (updated)."""
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        for leaf in _leaves(t):
            st = leaf.untyped_storage()
            key = (leaf.device, st.data_ptr(), st.nbytes())
            if st.nbytes() and key not in seen:
                seen.add(key)
                total += st.nbytes()
    return total


def breakdown(params, optimizer) -> dict:
    """{"params", "grads", "state"} bytes now; a storage shared by two is counted in the first."""
    seen: set = set()
    params = list(params)
    return {"params": storage_bytes(params, seen),
            "grads": storage_bytes([p.grad for p in params if p.grad is not None], seen),
            "state": storage_bytes(_tensors(list(optimizer.state.values())), seen)}


# ---- the rows -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the table. ``make(params) -> optimizer``; ``dtype``: the parameters' dtype;
    ``in_backward``: the step runs inside backward (tigercore.optim.step_in_backward), step() is
    not called; ``needs() -> reason or None``: skip the row, printing the reason, when a feature or
    package is absent; ``optional``: a third-party row whose errors skip it (with the error)."""
    name: str
    make: Callable
    dtype: torch.dtype = torch.float32
    in_backward: bool = False
    needs: Callable[[], Optional[str]] = lambda: None
    optional: bool = False


def needs_module(name: str) -> Callable[[], Optional[str]]:
    return lambda: None if importlib.util.find_spec(name) is not None else f"{name} is not installed"


def needs_kwarg(cls, kwarg: str) -> Callable[[], Optional[str]]:
    def check():
        sig = inspect.signature(cls.__init__).parameters
        if kwarg in sig or any(p.kind is p.VAR_KEYWORD for p in sig.values()):
            return None  # present, or **kwargs: the constructor decides
        return f"{cls.__module__}.{cls.__name__} has no {kwarg!r} argument"
    return check


def needs_step_in_backward() -> Optional[str]:
    return None if hasattr(tc_optim, "step_in_backward") else "tigercore.optim.step_in_backward is absent"


def _both(*checks):
    return lambda: next((r for r in (c() for c in checks) if r), None)


def _peer(module: str, attr: str, **kw) -> Callable:
    def make(params):
        return getattr(importlib.import_module(module), attr)(params, **kw)
    return make


def default_rows(peers: bool = True) -> list[Row]:
    bf16 = torch.bfloat16
    L, T = tc_optim.Lion, tc_optim.Tiger

    def lion(**kw):
        return lambda ps: L(ps, lr=1e-4, weight_decay=0.1, **kw)

    def tiger(**kw):
        return lambda ps: T(ps, lr=1e-3, **kw)

    eight = needs_kwarg(T, "momentum_bits")
    rows = [
        Row("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, fused=True)),
        Row("torch AdamW (for-loop)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, foreach=False)),
        Row("tigercore Lion", lion()),
        Row("tigercore Tiger", tiger()),
        Row("tigercore Lion, bf16 momentum", lion(momentum_dtype=bf16)),
        Row("tigercore Tiger, bf16 momentum", tiger(momentum_dtype=bf16)),
        Row("tigercore Lion, 8-bit momentum", lion(momentum_bits=8), needs=needs_kwarg(L, "momentum_bits")),
        Row("tigercore Tiger, 8-bit momentum", tiger(momentum_bits=8), needs=eight),
        Row("torch AdamW (fused), bf16", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, fused=True),
            bf16),
    ]
    for mode in ("master", "kahan", "stochastic", "none"):
        rows.append(Row(f"tigercore Lion, bf16 {mode}", lion(precision=mode), bf16))
    rows.append(Row("tigercore Lion, bf16 stochastic, bf16 momentum",
                    lion(precision="stochastic", momentum_dtype=bf16), bf16))
    for mode in ("master", "kahan", "stochastic", "none"):
        rows.append(Row(f"tigercore Tiger, bf16 {mode}", tiger(precision=mode), bf16))
        rows.append(Row(f"tigercore Tiger, bf16 {mode}, bf16 momentum", tiger(precision=mode, momentum_dtype=bf16),
                        bf16))
    rows += [
        Row("tigercore Tiger, bf16 stochastic, 8-bit momentum", tiger(precision="stochastic", momentum_bits=8),
            bf16, needs=eight),
        Row("tigercore Tiger, bf16 stochastic, step in backward", tiger(precision="stochastic"), bf16,
            in_backward=True, needs=needs_step_in_backward),
        Row("tigercore Tiger, bf16 stochastic, 8-bit momentum, step in backward",
            tiger(precision="stochastic", momentum_bits=8), bf16, in_backward=True,
            needs=_both(eight, needs_step_in_backward)),
    ]
    if peers:
        bnb, ao = needs_module("bitsandbytes"), needs_module("torchao")
        lion8 = _peer("bitsandbytes.optim", "Lion8bit", lr=1e-4, weight_decay=0.1)
        adam8 = _peer("torchao.optim", "AdamW8bit", lr=1e-3, weight_decay=0.1)
        rows += [Row("bitsandbytes Lion8bit", lion8, needs=bnb, optional=True),
                 Row("bitsandbytes Lion8bit, bf16", lion8, bf16, needs=bnb, optional=True),
                 Row("torchao AdamW8bit", adam8, needs=ao, optional=True),
                 Row("torchao AdamW8bit, bf16", adam8, bf16, needs=ao, optional=True)]
    return rows


# ---- the model and one training iteration -------------------------------------------------
def mlp(width: int = 1024, depth: int = 4, dtype=torch.float32, seed: int = 0) -> torch.nn.Module:
    """depth x (LayerNorm, Linear, GELU): 4.2 M parameters at the defaults."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = []
        for _ in range(depth):
            layers += [torch.nn.LayerNorm(width), torch.nn.Linear(width, width), torch.nn.GELU()]
        return torch.nn.Sequential(*layers).to(dtype)


class _Runner:
    def __init__(self, row: Row, width: int, depth: int, batch: int):
        self.row = row
        self.model = mlp(width, depth, row.dtype)
        self.params = list(self.model.parameters())
        self.x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1)).to(row.dtype)
        self.opt = row.make(self.params)
        self.hooks = tc_optim.step_in_backward(self.model, self.opt) if row.in_backward else None
        self.at_step: dict = {}

    def iteration(self, mark=None, probe: bool = False) -> dict:
        """forward, backward, step (unless inside backward), zero_grad; seconds of the step and of
        the whole. ``mark(phase)``: a context manager around each phase; ``probe``: record the
        bytes held when step() runs in ``self.at_step``."""
        mark = mark or (lambda name: contextlib.nullcontext())
        t0 = time.perf_counter()
        with mark("forward"):
            loss = self.model(self.x).float().square().mean()
        with mark("backward"):
            loss.backward()
        del loss
        if probe:
            self.at_step = breakdown(self.params, self.opt)
        t1 = time.perf_counter()
        if not self.row.in_backward:
            with mark("step"):
                self.opt.step()
        t2 = time.perf_counter()
        with mark("zero_grad"):
            self.opt.zero_grad(set_to_none=True)
        return {"step": None if self.row.in_backward else t2 - t1,
                "iter": time.perf_counter() - t0}


def _walk(events):
    for e in events:
        yield e
        yield from _walk(e.children)


def allocation_trace(fn) -> tuple[list, list]:
    """Run fn(mark) under the profiler; (allocation events as (time_ns, ptr, bytes) with negative
    bytes for frees, in time order; [(phase, start_ns, end_ns)])."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile, record_function

    from .timing import _quiet_stderr
    prefix = "tigercore.memory."
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(lambda name: record_function(prefix + name))
    allocs, phases = [], []
    for e in _walk(prof.profiler.kineto_results.experimental_event_tree()):
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            allocs.append((e.start_time_ns, e.extra_fields.ptr, e.extra_fields.alloc_size))
        elif e.name.startswith(prefix):
            phases.append((e.name[len(prefix):], e.start_time_ns, e.end_time_ns))
    allocs.sort()
    return allocs, sorted(phases, key=lambda p: p[1])


def live_peaks(allocs, phases) -> dict:
    """Peak live bytes of allocations made in the forward phase ("activations") and of all the
    others ("step": grads, transients), the phase where the latter peaked, and what was still live
    at the end (allocations freed later, e.g. state created in this iteration)."""
    fwd = [(s, e) for name, s, e in phases if name == "forward"]
    owner: dict = {}
    live = {"act": 0, "step": 0}
    peak = {"act": 0, "step": 0}
    where = None
    for t, ptr, size in allocs:
        if size > 0:
            cat = "act" if any(s <= t <= e for s, e in fwd) else "step"
            owner[ptr] = (cat, size)
            live[cat] += size
            if live[cat] > peak[cat]:
                peak[cat] = live[cat]
                if cat == "step":
                    where = next((name for name, s, e in phases if s <= t <= e), "between phases")
        elif ptr in owner:  # a free of a block allocated before the trace is not reported
            cat, n = owner.pop(ptr)
            live[cat] -= n
    return {"act_peak": peak["act"], "step_peak": peak["step"], "peak_phase": where, "left_live": live["step"]}


def measure_row(row: Row, width: int = 1024, depth: int = 4, batch: int = 16, warmup: int = 2) -> dict:
    """Memory of one row: build, warm up (state exists), then trace one iteration."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. precision="none" with bf16 params, meant here
        r = _Runner(row, width, depth, batch)
        for _ in range(warmup):
            r.iteration()
        start = breakdown(r.params, r.opt)  # grads are None here (zero_grad set_to_none)
        allocs, phases = allocation_trace(lambda mark: r.iteration(mark, probe=True))
    peaks = live_peaks(allocs, phases)
    n = sum(p.numel() for p in r.params)
    held = r.at_step
    persistent = held["params"] + held["grads"] + held["state"]
    return {"name": row.name, "numel": n, "dtype": str(row.dtype)[6:], "in_backward": row.in_backward,
            "bytes": held, "persistent_bytes": persistent,
            "peak_bytes": start["params"] + start["grads"] + start["state"] + peaks["step_peak"],
            "activation_bytes": peaks["act_peak"], "peak_phase": peaks["peak_phase"],
            "left_live_bytes": peaks["left_live"], "runner": r}


# ---- the table ----------------------------------------------------------------------------
def run_rows(rows: list[Row], width: int = 1024, depth: int = 4, batch: int = 16, rounds: int = 15,
             reference: str = "torch AdamW (fused)", log=print) -> list[dict]:
    """Memory of each row, then step times of all rows interleaved round by round (so the swings of
    a shared machine hit all alike), as ratios to the ``reference`` row's."""
    results = []
    for row in rows:
        reason = row.needs()
        if reason is None:
            try:
                results.append(measure_row(row, width, depth, batch))
                continue
            except Exception as e:  # noqa: BLE001 - a third-party row that does not run is reported
                if not row.optional:
                    raise
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        log(f"skipped: {row.name}: {reason}")
        results.append({"name": row.name, "skipped": reason})
    runners = [r["runner"] for r in results if "runner" in r]
    times = {id(r): {"step": [], "iter": []} for r in runners}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(rounds):
            for r in runners:
                t = r.iteration()
                for k in ("step", "iter"):
                    if t[k] is not None:
                        times[id(r)][k].append(t[k] * 1e3)
    for res in results:
        r = res.pop("runner", None)
        if r is not None:
            res.update({f"{k}_ms": statistics.median(v) if v else None for k, v in times[id(r)].items()})
    ref = next((res for res in results if res["name"] == reference and "step_ms" in res), None)
    for res in results:
        if ref is not None and "step_ms" in res:
            res["step_x_ref"] = res["step_ms"] / ref["step_ms"] if res["step_ms"] is not None else None
            res["iter_x_ref"] = res["iter_ms"] / ref["iter_ms"]
    return results


def _f(v, fmt):
    return format(v, fmt) if v is not None else "-"


def format_table(results: list[dict], reference: str = "torch AdamW (fused)") -> str:
    cols = f"{'row':66s} {'params':>6s} {'grads':>6s} {'state':>6s} {'persist':>7s} {'peak':>6s} {'at':>8s} " \
           f"{'step ms':>8s} {'x AdamW':>7s} {'iter x':>6s}"
    lines = ["bytes per parameter (params, grads held at step(), optimizer state; persist = their sum; "
             "peak = the most held during the iteration, activations excluded; at = the phase it was in)", cols]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['name']:66s} skipped: {r['skipped']}")
            continue
        n, b = r["numel"], r["bytes"]
        lines.append(f"{r['name']:66s} {b['params'] / n:6.2f} {b['grads'] / n:6.2f} {b['state'] / n:6.2f} "
                     f"{r['persistent_bytes'] / n:7.2f} {r['peak_bytes'] / n:6.2f} {r['peak_phase'] or '-':>8s} "
                     f"{_f(r.get('step_ms'), '8.2f')} "
                     f"{_f(r.get('step_x_ref'), '7.2f')} {_f(r.get('iter_x_ref'), '6.2f')}")
    return "\n".join(lines)


MODEL = {"width": 1024, "depth": 4, "batch": 16}  # the default table's model and batch


def run_cli(args) -> int:
    """The `bench --memory` branch: the default rows on MODEL, a table and <out>/memory.json."""
    width, depth, batch = MODEL["width"], MODEL["depth"], MODEL["batch"]
    old_threads = torch.get_num_threads()
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads.split(",")[-1]))
    try:
        rows = default_rows(peers=not getattr(args, "no_peers", False))
        threads = torch.get_num_threads()
        n = sum(p.numel() for p in mlp(width, depth).parameters())
        print(f"tigercore bench --memory: MLP {depth} x (LayerNorm, Linear {width}x{width}, GELU), {n / 1e6:.2f} M "
              f"params, batch {batch}; torch {torch.__version__}, {threads} thread(s), tigercore "
              f"native {'loaded' if _native.is_loaded() else 'NOT loaded (reference kernels)'}")
        t0 = time.perf_counter()
        results = run_rows(rows, width, depth, batch, rounds=max(3, 3 * args.repeats))
    finally:
        torch.set_num_threads(old_threads)
    print(format_table(results))
    act = [r["activation_bytes"] for r in results if "activation_bytes" in r]
    if act:
        print(f"activations (forward allocations, batch {batch}; excluded above): {min(act) / 2**20:.2f}-"
              f"{max(act) / 2**20:.2f} MB. step ms: optimizer.step() alone, median of the rounds; x AdamW: "
              "its ratio to torch AdamW (fused) timed in the same rounds; iter x: the same ratio for forward + "
              "backward + step. Timings are wall clock on a possibly shared machine.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "memory.json"
    path.write_text(json.dumps({"torch": torch.__version__, "threads": threads,
                                "model": {**MODEL, "numel": n}, "rows": results}, indent=2, default=str))
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")
    return 0
