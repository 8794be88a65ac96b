"""`tigercore demo`: Tiger, Lion and AdamW on the same small language model, data and seed, and
`tigercore dpm-demo`, which hands its arguments to tigercore.dpm.demo.main.

Task (no downloads): predict x3 ~ softmax(A[x1] + B[x2]) for random A, B and uniform x1, x2. The
loss is exact (expected over all contexts), so curves are noise-free and the entropy is the floor.
The model (Embedding, LayerNorm, Linear) gives Tiger all three parameter classes K, E and V.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tigercore import has_native
from tigercore.optim import Lion, PiecewiseLinearLR, Tiger, tiger_param_groups

from . import arg, command

VOCAB, CONTEXT, BATCH = 16, 2, 256
TIGER_ACCUM = 2  # Tiger takes each batch as 2 micro-batches of BATCH/2 (exact accumulation)


class SequenceTask:
    """x3 ~ softmax(A[x1] + B[x2]), with (x1, x2) drawn uniformly from all VOCAB**2 contexts."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(2, VOCAB, VOCAB, generator=g) * 2.0 ** 0.5
        self.contexts = torch.cartesian_prod(torch.arange(VOCAB), torch.arange(VOCAB))
        # row i: the next-token distribution of contexts[i]
        self.targets = torch.softmax(a[self.contexts[:, 0]] + b[self.contexts[:, 1]], dim=-1)
        self.entropy = float(-(self.targets * self.targets.log()).sum(-1).mean())

    def sample(self, n: int, g: torch.Generator):
        idx = torch.randint(len(self.contexts), (n,), generator=g)
        return self.contexts[idx], torch.multinomial(self.targets[idx], 1, generator=g).squeeze(1)

    @torch.no_grad()
    def expected_loss(self, model: nn.Module, device) -> float:
        logq = torch.log_softmax(model(self.contexts.to(device)), dim=-1)
        return float(-(self.targets.to(device) * logq).sum(-1).mean())


class TinyLM(nn.Module):
    def __init__(self, dim: int = 32, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.norm = nn.LayerNorm(CONTEXT * dim)
        self.mlp = nn.Sequential(nn.Linear(CONTEXT * dim, hidden), nn.GELU(), nn.Linear(hidden, VOCAB))

    def forward(self, tokens):
        return self.mlp(self.norm(self.embed(tokens).flatten(1)))


# name -> (builder, grad_accum_steps). Lion: lr AdamW/3, decay x3 (the automl README's rule);
# Tiger: lr is relative to each tensor's RMS (2e-3, the top of Su's recommended range).
OPTIMIZERS = {
    "tiger": (lambda m: Tiger(tiger_param_groups(m), lr=2e-3, beta=0.965, weight_decay=0.01,
                              grad_accum_steps=TIGER_ACCUM), TIGER_ACCUM),
    "lion": (lambda m: Lion(m.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.03), 1),
    "adamw": (lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01), 1),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(name: str, task: SequenceTask, steps: int, device, seed: int) -> dict:
    """`steps` parameter updates of BATCH samples each; warm-up over the first 10%, then a linear
    decay to 0.1 (knots count micro-steps, i.e. optimizer.step() calls)."""
    build, k = OPTIMIZERS[name]
    torch.manual_seed(seed)
    model = TinyLM().to(device)
    opt = build(model)
    warmup = max(1, steps // 10)
    sched = PiecewiseLinearLR(opt, {warmup * k: 1.0, steps * k: 0.1})
    data = torch.Generator().manual_seed(seed + 1)
    losses, update_times = [task.expected_loss(model, device)], []
    for _ in range(steps):
        x, y = task.sample(BATCH, data)
        elapsed = 0.0
        for xs, ys in zip(x.to(device).chunk(k), y.to(device).chunk(k)):
            F.cross_entropy(model(xs), ys).backward()
            _sync(device)
            t0 = time.perf_counter()
            opt.step()
            _sync(device)
            elapsed += time.perf_counter() - t0
            opt.zero_grad(set_to_none=True)
            sched.step()
        update_times.append(elapsed)
        losses.append(task.expected_loss(model, device))
    state_bytes = sum(t.nbytes for st in opt.state.values() for t in st.values() if torch.is_tensor(t))
    n_params = sum(p.numel() for p in model.parameters())
    timed = update_times[1:] or update_times  # the first update also allocates the state
    return {"losses": losses, "ms": 1e3 * sum(timed) / len(timed), "state_bytes": state_bytes,
            "n_params": n_params}


def _plot(results: dict, floor: float, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        ax.plot(r["losses"], label=name)
    ax.axhline(floor, color="gray", linestyle="--", label="entropy floor")
    ax.set(xlabel="update", ylabel="expected cross-entropy (nats)",
           title="tigercore demo: same model, data and seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@command("demo", "train a small model with Tiger, Lion and AdamW and compare them",
         arg("--steps", type=int, default=1000, help="parameter updates per optimizer (default 1000)"),
         arg("--device", default="cuda" if torch.cuda.is_available() else "cpu"),
         arg("--seed", type=int, default=0),
         arg("--threads", type=int, default=1,
             help="CPU intra-op threads (default 1: the model is too small to gain from more)"),
         arg("--out", type=Path, default=Path("tigercore-demo"), help="directory of the loss-curve PNG"),
         arg("--no-plot", action="store_true", help="do not write the PNG (no matplotlib needed)"))
def demo(args) -> int:
    if args.steps < 1:
        print("tigercore demo: --steps must be >= 1", file=sys.stderr)
        return 2
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("tigercore demo: the plot needs matplotlib (pip install matplotlib) or pass --no-plot",
                  file=sys.stderr)
            return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("tigercore demo: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    task = SequenceTask(args.seed)
    print(f"task: x3 ~ softmax(A[x1] + B[x2]), vocab {VOCAB}, batch {BATCH}, {args.steps} updates on "
          f"{device}; entropy floor {task.entropy:.4f} nats")
    print("kernels: " + ", ".join(f"{op} {'native' if has_native(op, device) else 'reference'}"
                                  for op in ("tiger_step_", "lion_step_")))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = {name: train(name, task, args.steps, device, args.seed) for name in OPTIMIZERS}
    finally:
        torch.set_num_threads(threads)
    print(f"\n{'optimizer':<10}{'initial loss':>13}{'final loss':>12}{'ms/update':>11}"
          f"{'state bytes':>13}{'bytes/param':>13}")
    for name, r in results.items():
        print(f"{name:<10}{r['losses'][0]:>13.4f}{r['losses'][-1]:>12.4f}{r['ms']:>11.3f}"
              f"{r['state_bytes']:>13d}{r['state_bytes'] / r['n_params']:>13.2f}")
    print(f"\n{results['tiger']['n_params']} parameters; loss: expected over all contexts; state: all "
          f"optimizer-state tensors;\nms/update: optimizer.step() only (tiger: the sum of its {TIGER_ACCUM} "
          "micro-steps), mean without the first update.")
    if not args.no_plot:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "loss_curves.png"
        _plot(results, task.entropy, path)
        print(f"loss curves: {path}")
    return 0


@command("dpm-demo", "Analytic-DPM demo (tigercore.dpm.demo); all arguments are passed to it",
         passthrough=True)
def dpm_demo(args) -> int:
    try:
        from tigercore.dpm import demo as dpm_demo_module
    except ImportError as e:
        print(f"tigercore dpm-demo: cannot import tigercore.dpm.demo: {e}", file=sys.stderr)
        return 2
    return dpm_demo_module.main(args.rest)
