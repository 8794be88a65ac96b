"""A small byte-level GPT and a deterministic CPU training loop, for comparing optimizers on a real
(if tiny) language-modelling run without any download: the text is this interpreter's own standard
library (the top-level *.py files of sysconfig's "stdlib" directory), split into train/val by a hash
of each file name. The model is a pre-LayerNorm causal transformer in the GPT-2 layout (learned
positions, GELU MLP, biases, head tied to the byte embedding); the default config has 0.84 M params.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sysconfig
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

# ---- data -------------------------------------------------------------------------------------
VAL_MODULUS = 10  # a file is validation text iff int(sha256(name)[:8 hex]) mod 10 == 0 (~10 % of files)


def _is_val(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % VAL_MODULUS == 0


@lru_cache(maxsize=4)
def stdlib_corpus(stdlib_dir: str | None = None) -> dict:
    """The top-level ``*.py`` files of the standard library as two uint8 tensors.

    Files are read in sorted-name order and concatenated; a file goes to "val" iff the first 32
    bits of the sha256 of its name (8 hex digits, as an integer) are 0 mod 10, else to "train". Returns dict(train, val, files, digest) where ``digest``
    (sha256 of train + val bytes) identifies the text, which differs between Python versions.
    """
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(root) if n.endswith(".py") and os.path.isfile(os.path.join(root, n)))
    if not names:
        raise FileNotFoundError(f"stdlib_corpus: no *.py files in {root!r}")
    parts = {"train": [], "val": []}
    for n in names:
        with open(os.path.join(root, n), "rb") as f:
            parts["val" if _is_val(n) else "train"].append(f.read())
    blobs = {k: b"".join(v) for k, v in parts.items()}
    if not blobs["val"] or not blobs["train"]:
        raise ValueError(f"stdlib_corpus: the hash split of {len(names)} files left a split empty")
    digest = hashlib.sha256(blobs["train"] + b"\0" + blobs["val"]).hexdigest()
    tensors = {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in blobs.items()}
    return dict(train=tensors["train"], val=tensors["val"], files=len(names), digest=digest)


# ---- model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 256
    seq_len: int = 128
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    mlp_ratio: int = 4
    tied_head: bool = True  # logits = h @ tok_emb.weight.T (no separate head matrix)


TINY_TEST_CONFIG = GPTConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, mlp_ratio=2)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc_out = nn.Linear(cfg.mlp_ratio * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Byte-level GPT. Init as GPT-2: N(0, 0.02) weights and embeddings, N(0, 0.02/sqrt(2L)) for the
    residual projections (proj, fc_out), zero biases, LayerNorm gain 1."""

    def __init__(self, cfg: GPTConfig = GPTConfig()):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"TinyGPT: d_model {cfg.d_model} is not a multiple of n_head {cfg.n_head}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = None if cfg.tied_head else nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        if T > self.cfg.seq_len:
            raise ValueError(f"TinyGPT: sequence length {T} exceeds the context {self.cfg.seq_len}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        x = self.ln_f(x)
        logits = x @ self.tok_emb.weight.t() if self.head is None else self.head(x)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- training ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _windows(data: torch.Tensor, starts: torch.Tensor, T: int):
    idx = starts[:, None] + torch.arange(T + 1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, n_windows: int = 64, batch: int = 16) -> float:
    """Mean next-byte cross entropy (nats) over ``n_windows`` evenly spaced windows of ``data``."""
    T = model.cfg.seq_len
    span = data.numel() - T - 1
    if span <= 0:
        raise ValueError(f"evaluate: {data.numel()} bytes are too few for windows of {T + 1}")
    starts = torch.linspace(0, span, n_windows).long()
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n_windows, batch):
        x, y = _windows(data, starts[i:i + batch], T)
        total += float(model(x, y)) * x.shape[0]
    model.train(was_training)
    return total / n_windows


def train(optimizer_factory, steps: int = 300, batch: int = 16, seq_len: int | None = None, seed: int = 0,
          grad_accum_steps: int = 1, scheduler_factory=None, config: GPTConfig = GPTConfig(),
          threads: int | None = 2, eval_every: int = 0, val_windows: int = 64, corpus: dict | None = None,
          stop_on_nonfinite: bool = True) -> dict:
    """Train a TinyGPT from seed ``seed`` for ``steps`` optimizer updates and return the losses.

    optimizer_factory(model) -> torch.optim.Optimizer. Any optimizer works. Gradient accumulation
    over ``grad_accum_steps`` = k micro-batches (each of ``batch`` sequences) is done in one of two ways:
      * the optimizer's groups carry ``grad_accum_steps`` (Tiger): it must equal k; step() and
        zero_grad() are called after every micro-batch and the optimizer accumulates internally
        (in the momentum); the scheduler is stepped after every micro-step (knots in micro-steps);
      * otherwise: the gradients of the k micro-batches (losses / k) add up in ``.grad`` and step()
        is called once per window; the scheduler is stepped once per window.
    scheduler_factory(optimizer, n_calls) -> LR scheduler, where n_calls is how many times the loop
    will call optimizer.step() (steps * k for in-optimizer accumulation, else steps).
    The model init (torch.manual_seed(seed)) and the micro-batch sequence (a generator seeded with
    ``seed``) do not depend on the optimizer, so runs differ only by the optimizer.
    Returns dict(losses (mean micro-batch loss per update), val_loss (final), val_curve [(update,
    val_loss)], train_loss_tail (mean of the last 10 % of losses), params, tokens, seconds,
    diverged, corpus_digest, config).
    """
    if steps < 1 or batch < 1 or grad_accum_steps < 1:
        raise ValueError(f"train: steps, batch and grad_accum_steps must be >= 1, got {steps}, {batch}, "
                         f"{grad_accum_steps}")
    if seq_len is not None and seq_len != config.seq_len:
        config = GPTConfig(**{**asdict(config), "seq_len": int(seq_len)})
    corpus = corpus or stdlib_corpus()
    k = int(grad_accum_steps)
    T = config.seq_len
    with _threads(threads):
        torch.manual_seed(seed)
        model = TinyGPT(config)
        opt = optimizer_factory(model)
        inner = {g.get("grad_accum_steps") for g in opt.param_groups} - {None}
        if inner and inner != {k}:
            raise ValueError(f"train: the optimizer accumulates over {sorted(inner)} micro-steps but "
                             f"grad_accum_steps={k}; pass the same k to both")
        in_opt = bool(inner) and k > 1
        n_calls = steps * k if in_opt else steps
        sched = scheduler_factory(opt, n_calls) if scheduler_factory else None
        gen = torch.Generator().manual_seed(seed)
        train_data = corpus["train"]
        span = train_data.numel() - T - 1
        losses, val_curve, diverged = [], [], False
        t0 = time.perf_counter()
        for step in range(steps):
            window_loss = 0.0
            for micro in range(k):
                x, y = _windows(train_data, torch.randint(0, span, (batch,), generator=gen), T)
                loss = model(x, y)
                window_loss += float(loss.detach()) / k
                if in_opt:
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    if sched:
                        sched.step()
                else:
                    (loss / k).backward()
            if not in_opt:
                opt.step()
                opt.zero_grad(set_to_none=True)
                if sched:
                    sched.step()
            losses.append(window_loss)
            if not math.isfinite(window_loss):
                diverged = True
                if stop_on_nonfinite:
                    break
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                val_curve.append((step + 1, evaluate(model, corpus["val"], val_windows)))
        seconds = time.perf_counter() - t0
        val = evaluate(model, corpus["val"], val_windows) if not diverged else float("nan")
    val_curve.append((len(losses), val))
    tail = losses[-max(1, len(losses) // 10):]
    return dict(losses=losses, val_loss=val, val_curve=val_curve, train_loss_tail=sum(tail) / len(tail),
                params=n_params(model), tokens=len(losses) * k * batch * T, seconds=seconds,
                diverged=diverged, corpus_digest=corpus["digest"], config=asdict(config), model=model)


__all__ = ["GPTConfig", "TINY_TEST_CONFIG", "TinyGPT", "stdlib_corpus", "evaluate", "train", "n_params"]
