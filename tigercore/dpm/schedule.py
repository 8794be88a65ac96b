# Noise schedules for Analytic-DPM, computed in log space (docs/semantics-dpm.md §1).
# log ᾱ_n = Σ_{i≤n} log1p(−β_i), β̄_n = −expm1(log ᾱ_n); skip-step quantities α_{t|s}, β_{t|s},
# β̃(s,t) are evaluated on the fly from log ᾱ (no (N+1)² tables). Index 0 is unused: β_0 = 0,
# ᾱ_0 = 1, β̄_0 = 0. All tables are float64 on the CPU.
# Tests: tests/test_dpm_exact_cases.py (docs/semantics-dpm.md §11.1 (T1/T2), cosine tail of §10).
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ._compat import deprecated_alias, renamed_kwargs

__all__ = ["NoiseSchedule", "call_eps_model"]

IndexLike = Union[int, Tensor]


class NoiseSchedule:
    """A discrete forward process q(x_n | x_{n-1}) = N(√α_n x_{n-1}, β_n I), n = 1..N.

    Construct with :meth:`linear`, :meth:`cosine` or :meth:`from_betas`. Every table has length
    N + 1 and float64 dtype; entry 0 is the x_0 convention (β_0 = 0, ᾱ_0 = 1, β̄_0 = 0).
    The skip-step methods take ints or integer tensors ``s``, ``t`` (broadcast together) with
    0 ≤ s ≤ t ≤ N and return float64 tensors.
    """

    def __init__(self, betas: Union[Tensor, np.ndarray, list], name: str = "custom"):
        b = torch.as_tensor(np.asarray(betas, dtype=np.float64) if not isinstance(betas, Tensor)
                            else betas.detach().to("cpu", torch.float64))
        if b.dim() != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D sequence of β_1..β_N, got shape {tuple(b.shape)}")
        if not bool(torch.all((b > 0) & (b < 1))):
            raise ValueError("betas must lie in the open interval (0, 1)")
        self.name = name
        self.num_timesteps = int(b.numel())                              # N
        self.betas = torch.cat([b.new_zeros(1), b])                     # [N+1], β_0 = 0
        self.alphas = 1.0 - self.betas
        self.log_alpha_bar = torch.cumsum(torch.log1p(-self.betas), 0)  # log ᾱ_0 = 0
        self.alpha_bar = torch.exp(self.log_alpha_bar)
        self.beta_bar = -torch.expm1(self.log_alpha_bar)                 # β̄_0 = 0
        self.log_beta_bar = torch.log(self.beta_bar)                     # [0] = -inf

    # ---------------------------------------------------------------- constructors
    @classmethod
    @renamed_kwargs(num_steps="num_timesteps")
    def linear(cls, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM linear schedule: β = np.linspace(beta_start, beta_end, N) in float64, N = ``num_timesteps``."""
        _check_steps(num_timesteps)
        return cls(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64), name="linear")

    @classmethod
    @renamed_kwargs(num_steps="num_timesteps")
    def cosine(cls, num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """iDDPM cosine schedule: β_i = min(1 − f(i/N)/f((i−1)/N), max_beta), f(u) = cos²((u+s)/(1+s)·π/2)."""
        _check_steps(num_timesteps)
        N = num_timesteps

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1.0 - f((i + 1) / N) / f(i / N), max_beta) for i in range(N)]
        return cls(np.asarray(betas, dtype=np.float64), name="cosine")

    @classmethod
    def from_betas(cls, betas: Union[Tensor, np.ndarray, list]) -> "NoiseSchedule":
        """Schedule from β_1..β_N (length N, no leading zero; entry 0 is added internally)."""
        return cls(betas, name="custom")

    # ---------------------------------------------------------------- skip-step quantities
    def _idx(self, n: IndexLike, name: str = "n") -> Tensor:
        t = torch.as_tensor(n)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer timestep or integer tensor, got dtype {t.dtype}")
        t = t.to("cpu", torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.num_timesteps):
            raise ValueError(f"{name} must lie in 0..{self.num_timesteps}, got range "
                             f"[{int(t.min())}, {int(t.max())}]")
        return t

    def _pair(self, s: IndexLike, t: IndexLike):
        s_, t_ = self._idx(s, "s"), self._idx(t, "t")
        s_, t_ = torch.broadcast_tensors(s_, t_)
        if s_.numel() and bool(torch.any(s_ > t_)):
            raise ValueError("skip-step quantities need s <= t")
        return s_, t_

    def log_skip_alpha(self, s: IndexLike, t: IndexLike) -> Tensor:
        """log α_{t|s} = log ᾱ_t − log ᾱ_s (≤ 0)."""
        s_, t_ = self._pair(s, t)
        return self.log_alpha_bar[t_] - self.log_alpha_bar[s_]

    def skip_alpha(self, s: IndexLike, t: IndexLike) -> Tensor:
        """α_{t|s} = ᾱ_t / ᾱ_s."""
        return torch.exp(self.log_skip_alpha(s, t))

    def skip_beta(self, s: IndexLike, t: IndexLike) -> Tensor:
        """β_{t|s} = 1 − α_{t|s}, via −expm1 (no cancellation for t close to s)."""
        return -torch.expm1(self.log_skip_alpha(s, t))

    def tilde_beta(self, s: IndexLike, t: IndexLike) -> Tensor:
        """β̃(s,t) = β_{t|s} β̄_s / β̄_t, the variance of q(x_s | x_t, x_0) (0 for s = 0; needs t ≥ 1)."""
        s_, t_ = self._pair(s, t)
        if t_.numel() and int(t_.min()) < 1:
            raise ValueError("tilde_beta needs t >= 1")
        return self.skip_beta(s_, t_) * self.beta_bar[s_] / self.beta_bar[t_]

    # ---------------------------------------------------------------- per-timestep helpers
    def coef(self, name: str, n: IndexLike, like: Optional[Tensor] = None) -> Tensor:
        """Table ``name`` (e.g. "alpha_bar") at timesteps ``n``, cast to ``like``'s dtype/device and
        shaped [B, 1, ..., 1] for broadcasting against a batch ``like`` when ``n`` is 1-D."""
        idx = self._idx(n)
        v = getattr(self, name)[idx]
        if like is None:
            return v
        v = v.to(device=like.device, dtype=like.dtype)
        if v.dim() == 1:
            v = v.reshape(-1, *([1] * (like.dim() - 1)))
        return v

    def marginal(self, x0: Tensor, n: IndexLike, eps: Tensor) -> Tensor:
        """x_n = √ᾱ_n x_0 + √β̄_n ε (n an int or a [B] tensor), in x0's dtype."""
        a = self.coef("alpha_bar", n, x0).sqrt()
        b = self.coef("beta_bar", n, x0).sqrt()
        return a * x0 + b * eps

    def predict_x0(self, x_n: Tensor, n: IndexLike, eps_pred: Tensor) -> Tensor:
        """x̂_0 = x_n/√ᾱ_n − √(β̄_n/ᾱ_n) ε̂ (unclamped)."""
        ab = self.coef("alpha_bar", n).to(torch.float64)
        r = torch.rsqrt(ab)
        q = torch.sqrt(self.coef("beta_bar", n) / ab)
        shape = (-1, *([1] * (x_n.dim() - 1))) if r.dim() == 1 else ()
        r = r.to(x_n.device, x_n.dtype).reshape(shape)
        q = q.to(x_n.device, x_n.dtype).reshape(shape)
        return r * x_n - q * eps_pred.to(x_n.dtype)

    def __len__(self) -> int:
        return self.num_timesteps

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name}, num_timesteps={self.num_timesteps})"

    num_steps = deprecated_alias("num_steps", "num_timesteps")


def _check_steps(num_timesteps: int) -> None:
    if not isinstance(num_timesteps, (int, np.integer)) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")


def call_eps_model(model: Callable, x: Tensor, n: IndexLike,
                   time_fn: Optional[Callable[[Tensor], Tensor]] = None):
    """Call ``model(x, time_fn(n))`` with n as an int64 [B] tensor on x's device.

    [note: model time convention] The model receives the diffusion index n ∈ 1..N by default.
    Pass ``time_fn`` for other conventions (docs/semantics-dpm.md §1): ``lambda n: n - 1`` (iDDPM/DDIM networks,
    ``shift1``), ``lambda n: n * 1000 / N`` (rescaled), ``lambda n: 999 * n / N`` (score-SDE).
    """
    nt = torch.as_tensor(n, dtype=torch.long, device=x.device)
    if nt.dim() == 0:
        nt = nt.expand(x.shape[0])
    return model(x, time_fn(nt) if time_fn is not None else nt)


def iter_x0(data, max_batches=None, device=None):
    """The x_0 tensors of a dataset or DataLoader (a batch may be a tensor or a (x_0, ...) tuple),
    at most max_batches of them, moved to device."""
    for bi, batch in enumerate(data):
        if max_batches is not None and bi >= max_batches:
            break
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x0.to(device) if device is not None else x0
