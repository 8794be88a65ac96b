# Monte Carlo estimation of δ_n = 1 − Γ_n, Γ_n = E‖ε_θ(x_n, n)‖²/d (docs/semantics-dpm.md §2, §9).
# GammaEstimator accumulates per-timestep float64 moments of eps_stats' (y, c, u, z, w) with
# segment_moments + Chan merges (also across torch.distributed ranks) and reports δ̂_n with the
# optimal control variate ("cv"), the NPR scalar ("npr") or the official naive mean ("naive").
# GammaTable stores δ in float64, clipped to [0, 1]. Reference ops: tigercore/reference/dpm.py.
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

# The dispatcher ops: native kernels when built, the reference (tigercore/reference/dpm.py) otherwise.
from ..reference.dpm import EPS_STATS_COLUMNS, merge_moments
from ._ops import eps_stats as _eps_stats, segment_moments as _segment_moments
from ._compat import deprecated_alias, renamed_kwargs
from .schedule import NoiseSchedule, call_eps_model, iter_x0

__all__ = ["GammaTable", "GammaEstimator", "ESTIMATORS"]

ESTIMATORS = ("cv", "npr", "naive")
_Y, _C, _U, _Z = (EPS_STATS_COLUMNS.index(k) for k in "ycuz")


@dataclass
class GammaTable:
    """Per-timestep estimate of δ_n = 1 − Γ_n, length N + 1 (index 0 unused: δ_0 = 0, Γ_0 = 1).

    ``one_minus_gamma`` (float64, in [0, 1]; NaN where no sample was seen), ``gamma`` = 1 − δ,
    ``stderr`` (float64 Monte Carlo standard error of the unclipped δ̂; NaN if unknown or count < 2),
    ``count`` (int64 samples per n), ``clipped`` (bool: the raw δ̂ was outside [0, 1]; a clipped
    entry with δ = 0 means Γ̂ > 1), ``estimator`` ("cv", "npr", "naive", "ms_eps" or "exact"),
    ``raw_one_minus_gamma`` (float64, the unclipped δ̂ the table was made from; defaults to
    ``one_minus_gamma``). Export: :meth:`raw` (unclipped δ̂) and :meth:`to_ms_eps` (official Γ̂).
    """

    one_minus_gamma: Tensor
    stderr: Tensor
    count: Tensor
    clipped: Tensor
    estimator: str = "cv"
    raw_one_minus_gamma: Optional[Tensor] = field(default=None, repr=False)
    gamma: Tensor = field(init=False, repr=False)

    def __post_init__(self):
        d = torch.as_tensor(self.one_minus_gamma, dtype=torch.float64).detach().cpu().clone()
        if d.dim() != 1 or d.numel() < 2:
            raise ValueError(f"one_minus_gamma must be 1-D of length N+1 >= 2, got shape {tuple(d.shape)}")
        n1 = d.numel()

        def vec(x, dtype, name):
            x = torch.as_tensor(x, dtype=dtype).detach().cpu().clone()
            if x.shape != (n1,):
                raise ValueError(f"{name} must have shape ({n1},), got {tuple(x.shape)}")
            return x

        self.stderr = vec(self.stderr, torch.float64, "stderr")
        self.count = vec(self.count, torch.long, "count")
        self.clipped = vec(self.clipped, torch.bool, "clipped")
        fin = d[torch.isfinite(d)]
        if fin.numel() and (float(fin.min()) < 0 or float(fin.max()) > 1):
            raise ValueError("one_minus_gamma must lie in [0, 1] (clip it and set `clipped`)")
        d[0], self.stderr[0], self.count[0], self.clipped[0] = 0.0, 0.0, 0, False
        raw = d.clone() if self.raw_one_minus_gamma is None else vec(self.raw_one_minus_gamma, torch.float64,
                                                                     "raw_one_minus_gamma")
        raw[0] = 0.0
        same = (raw.clamp(0.0, 1.0) == d) | (torch.isnan(raw) & torch.isnan(d))
        if not bool(same.all()):
            bad = torch.nonzero(~same).flatten()[:8].tolist()
            raise ValueError(f"one_minus_gamma must be raw_one_minus_gamma clipped to [0, 1]; differs at {bad}")
        self.raw_one_minus_gamma = raw
        self.one_minus_gamma = d
        self.gamma = 1.0 - d

    # ------------------------------------------------------------------ export
    def raw(self) -> Tensor:
        """The unclipped estimate δ̂ (float64 [N+1], a copy; NaN where unsampled, entry 0 is 0).
        Γ̂ = 1 − raw() is the estimate of Γ the official code would store (Γ̂ > 1 where δ̂ < 0)."""
        return self.raw_one_minus_gamma.clone()

    def to_ms_eps(self, path=None) -> np.ndarray:
        """Γ̂ = 1 − raw δ̂ as the official ``ms_eps`` vector: numpy float32 [N+1], entry 0 = 0
        (as the official ``save_ms_eps``). With ``path``, also ``torch.save`` it there (the official
        ``*.ms_eps.pth`` format, loadable by the official code and by :meth:`from_ms_eps`).
        ``GammaTable.from_ms_eps(t.to_ms_eps())`` round-trips up to the float32 rounding of Γ̂."""
        g = (1.0 - self.raw_one_minus_gamma).to(torch.float32).numpy().copy()
        g[0] = 0.0
        if path is not None:
            torch.save(g, path)
        return g

    @property
    def num_timesteps(self) -> int:
        """N (the table has N + 1 entries)."""
        return self.one_minus_gamma.numel() - 1

    num_steps = deprecated_alias("num_steps", "num_timesteps")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_one_minus_gamma(cls, delta, stderr=None, count=None, estimator: str = "exact") -> "GammaTable":
        """Table from a float64 δ vector of length N + 1 (values outside [0, 1] are clipped and flagged)."""
        d = torch.as_tensor(delta, dtype=torch.float64).detach().cpu()
        n1 = d.numel()
        clipped = (d < 0) | (d > 1)
        return cls(d.clamp(0.0, 1.0),
                   torch.full((n1,), math.nan, dtype=torch.float64) if stderr is None else stderr,
                   torch.zeros(n1, dtype=torch.long) if count is None else count,
                   clipped, estimator, raw_one_minus_gamma=d.clone())

    @classmethod
    @renamed_kwargs(num_steps="num_timesteps")
    def from_ms_eps(cls, source: Union[str, Tensor, np.ndarray, Sequence[float]],
                    num_timesteps: Optional[int] = None) -> "GammaTable":
        """Load an official Analytic-DPM Γ vector (``*.ms_eps.pth``, ``.npy``, tensor or array).

        [note: ms_eps conversion] The file holds Γ_n (float32, length N + 1, entry 0 unused); we
        store δ = 1 − float64(Γ) exactly as given (no re-rounding), clip to [0, 1] and flag the
        clipped entries, so Γ̂ > 1 survives as ``clipped & (δ == 0)`` for ``dp_seg``. Pass a vector
        of length N (without entry 0) together with ``num_timesteps`` = N to have entry 0 prepended.
        """
        g = _load_vector(source)
        N = num_timesteps
        if N is not None and g.numel() == N:
            g = torch.cat([g.new_zeros(1), g])
        if N is not None and g.numel() != N + 1:
            raise ValueError(f"ms_eps has {g.numel()} entries, expected N + 1 = {N + 1}")
        return cls.from_one_minus_gamma(1.0 - g.to(torch.float64), estimator="ms_eps")

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save as a plain dict of tensors (``torch.load(path, weights_only=True)`` safe)."""
        torch.save({"format": "tigercore.GammaTable/2", "estimator": self.estimator,
                    "one_minus_gamma": self.one_minus_gamma, "stderr": self.stderr,
                    "count": self.count, "clipped": self.clipped, "raw_one_minus_gamma": self.raw_one_minus_gamma},
                   path)

    @classmethod
    def load(cls, path) -> "GammaTable":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:                       # e.g. a pickled numpy array
            raise ValueError(f"{path} is not a tigercore GammaTable file (use from_ms_eps for "
                             f"official Γ files): {type(e).__name__}") from e
        if not isinstance(obj, dict) or obj.get("format") not in ("tigercore.GammaTable/1", "tigercore.GammaTable/2"):
            raise ValueError(f"{path} is not a tigercore GammaTable file (use from_ms_eps for official Γ files)")
        return cls(obj["one_minus_gamma"], obj["stderr"], obj["count"], obj["clipped"], obj["estimator"],
                   raw_one_minus_gamma=obj.get("raw_one_minus_gamma"))   # format /1 kept no raw δ̂

    def check_covers(self, timesteps: Tensor) -> None:
        """Raise if δ is unknown (NaN) at any of ``timesteps``."""
        t = torch.as_tensor(timesteps, dtype=torch.long).reshape(-1)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.num_timesteps):
            raise ValueError(f"timesteps outside 0..{self.num_timesteps}")
        bad = t[torch.isnan(self.one_minus_gamma[t])]
        if bad.numel():
            raise ValueError(f"δ is unknown (no samples) at timesteps {bad[:8].tolist()}...")


def _load_vector(source) -> Tensor:
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        path = str(source)
        if path.endswith(".npy"):
            obj = np.load(path, allow_pickle=False)
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                # official files pickle a numpy array; allow exactly numpy's array reconstruction
                try:
                    from numpy._core.multiarray import _reconstruct
                except ImportError:                      # numpy < 2
                    from numpy.core.multiarray import _reconstruct
                safe = [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.float32)), type(np.dtype(np.float64))]
                with torch.serialization.safe_globals(safe):
                    obj = torch.load(path, map_location="cpu", weights_only=True)
    else:
        obj = source
    if isinstance(obj, dict):
        raise ValueError("expected a Γ vector, got a dict (a GammaTable file? use GammaTable.load)")
    t = torch.as_tensor(np.asarray(obj) if not isinstance(obj, Tensor) else obj).detach().cpu()
    if t.dim() != 1 or not t.is_floating_point():
        raise ValueError(f"Γ must be a 1-D floating vector, got shape {tuple(t.shape)} dtype {t.dtype}")
    return t


class GammaEstimator:
    """Accumulate per-timestep statistics of ε_θ and estimate δ_n = 1 − Γ_n (docs/semantics-dpm.md §2).

    ``estimator``:
      * ``"cv"`` (default): optimal control variate δ̂ = ū − (1 − b̂)(c̄ − 1), b̂ = Ĉov(y,c)/V̂ar(c),
        i.e. 1 − ȳ + b̂(c̄ − 1); same target as the official Γ. Needs ``eps``.
      * ``"npr"``: z̄ = mean ‖ε − ε̂‖²/d, the optimum for the given imperfect mean. Needs ``eps``.
      * ``"naive"``: 1 − ȳ, the official estimator.
    All three share the state (count, mean, co-moment matrix of (y, c, u, z, w) per timestep in
    float64), so ``result(estimator=...)`` can report any of them from one pass.
    """

    def __init__(self, schedule: NoiseSchedule, estimator: str = "cv"):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.schedule = schedule
        self.estimator = estimator
        self.reset()

    def reset(self) -> None:
        n1, k = self.schedule.num_timesteps + 1, len(EPS_STATS_COLUMNS)
        self._state = (torch.zeros(n1, dtype=torch.float64), torch.zeros(n1, k, dtype=torch.float64),
                       torch.zeros(n1, k, k, dtype=torch.float64))

    # ------------------------------------------------------------------ accumulation
    def update(self, eps_pred: Tensor, timesteps: Union[int, Tensor], eps: Optional[Tensor] = None) -> None:
        """Add a batch: ``eps_pred`` [B, ...] = ε_θ(x_n, n), ``timesteps`` int or [B] ints in 1..N
        (mixed allowed), ``eps`` [B, ...] the noise that produced x_n (required for "cv"/"npr")."""
        if eps is None and self.estimator != "naive":
            raise ValueError(f"estimator {self.estimator!r} needs the noise `eps` used to draw x_n")
        if not isinstance(eps_pred, Tensor) or eps_pred.dim() < 2:
            raise ValueError("eps_pred must be a [B, ...] tensor with at least 2 dims")
        b = eps_pred.shape[0]
        ts = torch.as_tensor(timesteps)
        if ts.is_floating_point() or ts.dtype == torch.bool:
            raise TypeError(f"timesteps must be integers, got dtype {ts.dtype}")
        if ts.dim() == 0:
            ts = ts.expand(b)
        if ts.shape != (b,):
            raise ValueError(f"timesteps must be an int or a [B] = [{b}] tensor, got shape {tuple(ts.shape)}")
        stats = _eps_stats(eps_pred, eps)
        _check_finite_stats(stats, eps_pred, eps)      # before anything is merged: a refused batch changes nothing
        batch = _segment_moments(stats, ts.to(stats.device), self.schedule.num_timesteps)
        self._state = merge_moments(self._state, tuple(x.cpu() for x in batch))

    @torch.no_grad()
    def estimate(self, model: Callable, data: Iterable, *, timesteps: Union[str, Sequence[int], Tensor] = "all",
                 repeats: int = 1, time_fn: Optional[Callable[[Tensor], Tensor]] = None,
                 generator: Optional[torch.Generator] = None, device=None, progress: bool = True,
                 max_batches: Optional[int] = None) -> GammaTable:
        """Run ``model(x_n, n)`` over ``data`` and accumulate; returns :meth:`result`.

        ``data`` yields tensors x_0 [B, ...] (or tuples/lists whose first item is x_0). For each batch
        this draws, per sample, ε ~ N(0, I) (with ``generator``) and x_n = √ᾱ_n x_0 + √β̄_n ε, and calls
        ``model(x_n, n)`` with n an int64 [B] tensor (mapped by ``time_fn``, see ``call_eps_model``):
          * ``timesteps="all"``: every n = 1..N for every datum, a fresh ε per (datum, n), as the
            official code (N·M evaluations);
          * ``timesteps="random"``: one n ~ U{1..N} per datum (mixed within the batch);
          * a sequence/tensor of timesteps: only those n (e.g. the steps of a trajectory).
        ``repeats`` passes over ``data``; ``max_batches`` caps the batches per pass. A tqdm bar
        counts model calls when ``progress`` is true.
        """
        from tqdm.auto import tqdm

        N = self.schedule.num_timesteps
        if isinstance(timesteps, str):
            if timesteps not in ("all", "random"):
                raise ValueError("timesteps must be 'all', 'random' or a sequence of ints")
            steps = torch.arange(1, N + 1) if timesteps == "all" else None
        else:
            steps = self.schedule._idx(torch.as_tensor(timesteps).reshape(-1), "timesteps")
            if steps.numel() == 0 or int(steps.min()) < 1:
                raise ValueError(f"timesteps must be non-empty and lie in 1..{N}")
        total = None
        if hasattr(data, "__len__"):
            nb = len(data) if max_batches is None else min(len(data), max_batches)
            total = repeats * nb * (1 if steps is None else steps.numel())
        bar = tqdm(total=total, disable=not progress, desc="Γ estimate", unit="call")
        try:
            for _ in range(repeats):
                for x0 in iter_x0(data, max_batches, device):
                    if not x0.is_floating_point():
                        raise TypeError(f"data must yield floating tensors, got {x0.dtype}")
                    B = x0.shape[0]
                    if steps is None:
                        groups = [torch.randint(1, N + 1, (B,), generator=generator)]
                    else:
                        groups = [int(n) for n in steps]
                    for n in groups:
                        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
                        n_vec = (n if isinstance(n, Tensor) else torch.full((B,), n, dtype=torch.long))
                        x_n = self.schedule.marginal(x0, n_vec.to(x0.device), eps)
                        out = call_eps_model(model, x_n, n_vec, time_fn)
                        eps_pred = out[0] if isinstance(out, (tuple, list)) else out
                        self.update(eps_pred, n_vec, eps)
                        bar.update(1)
        finally:
            bar.close()
        return self.result()

    # ------------------------------------------------------------------ results
    def state(self, sync: Optional[bool] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """The (count, mean, co-moment) state; merged over torch.distributed ranks if ``sync``
        (default: when torch.distributed is initialised with world size > 1). Does not mutate."""
        dist = torch.distributed
        if sync is None:
            sync = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not sync:
            return self._state
        return _all_merge(self._state)

    def result(self, estimator: Optional[str] = None, sync: Optional[bool] = None) -> GammaTable:
        """δ̂ table for ``estimator`` (default: the constructor's), see :class:`GammaTable`."""
        est = estimator or self.estimator
        if est not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {est!r}")
        count, mean, com = self.state(sync)
        m = count
        if est == "naive":
            raw = 1.0 - mean[:, _Y]
            resid = com[:, _Y, _Y]
        elif est == "npr":
            raw = mean[:, _Z]
            resid = com[:, _Z, _Z]
        else:
            m2c, cyc = com[:, _C, _C], com[:, _Y, _C]
            b = torch.where(m2c > 0, cyc / m2c.clamp(min=1e-300), torch.zeros_like(m2c))
            # [note: cv form] ū − (1 − b̂)(c̄ − 1) equals 1 − ȳ + b̂(c̄ − 1) without the 1 − ȳ cancellation
            raw = mean[:, _U] - (1.0 - b) * (mean[:, _C] - 1.0)
            resid = (com[:, _Y, _Y] - b * cyc).clamp(min=0.0)
        if bool(torch.isnan(raw[m > 0]).any()):
            raise ValueError(f"estimator {est!r} needs columns that were not recorded (pass eps to update)")
        stderr = torch.sqrt(resid / (m * (m - 1)))
        stderr = torch.where(m >= 2, stderr, torch.full_like(stderr, math.nan))
        raw = torch.where(m > 0, raw, torch.full_like(raw, math.nan))
        clipped = (raw < 0) | (raw > 1)
        return GammaTable(raw.clamp(0.0, 1.0), stderr, m.round().to(torch.long), clipped, est,
                          raw_one_minus_gamma=raw)

    def state_dict(self) -> dict:
        c, m, k = self._state
        return {"count": c.clone(), "mean": m.clone(), "comoment": k.clone(), "estimator": self.estimator}

    def load_state_dict(self, sd: dict) -> None:
        state = (sd["count"].to(torch.float64), sd["mean"].to(torch.float64), sd["comoment"].to(torch.float64))
        if tuple(x.shape for x in state) != tuple(x.shape for x in self._state):
            raise ValueError("state_dict shapes do not match this schedule")
        self._state = state


def _check_finite_stats(stats: Tensor, eps_pred: Tensor, eps: Optional[Tensor]) -> None:
    """Refuse a batch whose recorded statistics are not finite (docs/semantics-dpm.md §2).

    y = Σε̂²/d is finite iff every ε̂ is finite and no square overflows float32 (|ε̂| > 1.8e19), and
    likewise c for ε; u and z can also overflow from finite but huge inputs. The input tensors are
    scanned only when a statistic is bad, to name the culprit in the message.
    """
    cols = [_Y] + ([_C, _U, _Z] if eps is not None else [])
    ok = torch.isfinite(stats[:, cols])
    if bool(ok.all()):
        return
    rows = torch.nonzero(~ok.all(1)).flatten()[:8].tolist()
    culprits = [name for name, t in (("eps_pred", eps_pred), ("eps", eps))
                if t is not None and not bool(torch.isfinite(t).all())]
    what = (" and ".join(culprits) + " contain" + ("s" if len(culprits) == 1 else "") + " NaN or ±inf"
            if culprits else "the squares of eps_pred / eps overflow float32 (|value| > 1.8e19)")
    raise ValueError(f"GammaEstimator.update: {what} (samples {rows}{'...' if len(rows) == 8 else ''}); the "
                     "batch was refused and the estimator's state is unchanged")


def _all_merge(state: Tuple[Tensor, Tensor, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """All-gather the packed float64 moment state of every rank and Chan-merge it in rank order.

    [note: distributed merge] An all-gather (rather than a SUM all-reduce of raw power sums)
    keeps the Chan merge exact in form and makes the merged state bitwise identical on all ranks,
    independent of the backend's reduction order. The payload is (N+1)·(1 + k + k²) doubles.
    """
    dist = torch.distributed
    count, mean, com = state
    n1, k = mean.shape
    flat = torch.cat([count.reshape(n1, 1), mean, com.reshape(n1, k * k)], 1)
    dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    flat = flat.to(dev)
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat)
    merged = None
    for p in parts:
        p = p.cpu()
        s = (p[:, 0].clone(), p[:, 1:1 + k].clone(), p[:, 1 + k:].reshape(n1, k, k).clone())
        merged = s if merged is None else merge_moments(merged, s)
    return merged
