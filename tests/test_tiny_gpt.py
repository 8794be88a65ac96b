"""tigercore.benchmarks.tiny_gpt: the stdlib corpus split, the model (parameter count by closed form,
causality, uniform initial loss ln 256), and the training loop (bitwise determinism, the two
accumulation modes, Tiger's in-momentum accumulation = the large batch). Tiny configs keep it fast.
"""
import hashlib
import math

import pytest
import torch

from tigercore.benchmarks.tiny_gpt import (TINY_TEST_CONFIG, GPTConfig, TinyGPT, n_params, stdlib_corpus,
                                          train)
from tigercore.optim import PiecewiseLinearLR, Tiger, tiger_param_groups

KW = dict(batch=4, config=TINY_TEST_CONFIG, threads=1)


def test_corpus_split_on_a_directory(tmp_path):
    names = [f"m{i:02d}.py" for i in range(40)]
    for n in names:
        (tmp_path / n).write_bytes(f"# {n}\n".encode())
    (tmp_path / "notes.txt").write_bytes(b"not python")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "inner.py").write_bytes(b"nested")
    c = stdlib_corpus(str(tmp_path))
    is_val = [int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) % 10 == 0 for n in names]
    assert 0 < sum(is_val) < len(names)
    expect_val = b"".join(f"# {n}\n".encode() for n, v in zip(names, is_val) if v)
    expect_train = b"".join(f"# {n}\n".encode() for n, v in zip(names, is_val) if not v)
    assert bytes(c["val"].tolist()) == expect_val and bytes(c["train"].tolist()) == expect_train
    assert c["files"] == 40 and c["train"].dtype == torch.uint8


def test_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.py files"):
        stdlib_corpus(str(tmp_path))
    (tmp_path / "m00.py").write_bytes(b"x")  # a single file: one split stays empty
    with pytest.raises(ValueError, match="left a split empty"):
        stdlib_corpus(str(tmp_path))


def test_stdlib_corpus_is_real_text():
    c = stdlib_corpus()
    assert c["files"] > 50 and c["train"].numel() > 10 ** 6
    frac = c["val"].numel() / (c["val"].numel() + c["train"].numel())
    assert 0.02 < frac < 0.3
    assert b"def " in bytes(c["val"][:100000].tolist())


def test_parameter_count_closed_form():
    V, d, T, L, r = 256, 128, 128, 4, 4
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (r * d * d + r * d) + (r * d * d + d)
    expected = V * d + T * d + L * block + 2 * d
    assert expected == 842496
    assert n_params(TinyGPT()) == expected
    untied = TinyGPT(GPTConfig(tied_head=False))
    assert n_params(untied) == expected + V * d and untied.head.weight.shape == (V, d)


def test_initial_loss_is_uniform_and_model_is_causal():
    torch.manual_seed(0)
    m = TinyGPT(TINY_TEST_CONFIG)
    x = torch.randint(0, 256, (8, TINY_TEST_CONFIG.seq_len))
    y = torch.randint(0, 256, x.shape)
    with torch.no_grad():
        assert abs(float(m(x, y)) - math.log(256)) < 0.05  # N(0, 0.02) weights: near-uniform logits
    x2 = x.clone()
    x2[:, 20:] = (x2[:, 20:] + 1) % 256
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, :20], b[:, :20]) and not torch.equal(a[:, 20:], b[:, 20:])
    with pytest.raises(ValueError, match="exceeds the context"):
        m(torch.zeros(1, TINY_TEST_CONFIG.seq_len + 1, dtype=torch.long))


def _adamw(m):
    return torch.optim.AdamW(m.parameters(), lr=1e-2)


def test_train_is_deterministic_and_learns():
    a = train(_adamw, steps=40, seed=3, **KW)
    b = train(_adamw, steps=40, seed=3, **KW)
    c = train(_adamw, steps=40, seed=4, **KW)
    assert a["losses"] == b["losses"] and a["val_loss"] == b["val_loss"]
    assert a["losses"] != c["losses"]
    assert a["losses"][0] > 5.3 and a["train_loss_tail"] < a["losses"][0] - 1.0
    assert math.isfinite(a["val_loss"]) and a["tokens"] == 40 * 4 * TINY_TEST_CONFIG.seq_len


def test_accumulation_modes_and_scheduler_calls():
    calls = {}

    def sched(name):
        def f(opt, n):
            calls[name] = n
            return PiecewiseLinearLR(opt, {max(1, n // 10): 1.0})
        return f
    train(_adamw, steps=5, grad_accum_steps=3, scheduler_factory=sched("adamw"), **KW)
    tiger = lambda m: Tiger(tiger_param_groups(m), lr=1e-2, grad_accum_steps=3)  # noqa: E731
    r = train(tiger, steps=5, grad_accum_steps=3, scheduler_factory=sched("tiger"), **KW)
    assert calls == {"adamw": 5, "tiger": 15} and len(r["losses"]) == 5
    with pytest.raises(ValueError, match="accumulates over \\[3\\] micro-steps but grad_accum_steps=2"):
        train(tiger, steps=1, grad_accum_steps=2, **KW)
    with pytest.raises(ValueError, match="must be >= 1"):
        train(_adamw, steps=0, **KW)


def test_tiger_accumulation_tracks_the_large_batch():
    """k = 2 micro-batches of 2 sequences (accumulated in Tiger's momentum) against 1 batch of the
    same 4 sequences: equal in exact arithmetic (optimizers.md §2.5), here within fp32 rounding."""
    def opt(k):
        return lambda m: Tiger(tiger_param_groups(m), lr=2e-2, grad_accum_steps=k)
    kw = dict(config=TINY_TEST_CONFIG, threads=1)
    big = train(opt(1), steps=8, batch=4, **kw)
    small = train(opt(2), steps=8, batch=2, grad_accum_steps=2, **kw)
    assert big["losses"] == pytest.approx(small["losses"], rel=1e-5)
    assert big["losses"][-1] < big["losses"][0]
