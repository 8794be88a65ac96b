# Analytic-DPM as a 🤗 diffusers scheduler (docs/semantics-dpm.md §13): AnalyticDPMScheduler
# (SchedulerMixin + ConfigMixin) takes a trained model's scheduler config and a Γ table, chooses an
# even / quadratic / KL-optimal trajectory and steps with the analytic (or NPR, SN, β, β̃) variance
# through tigercore.dpm.sampler.reverse_step, so its chains equal AnalyticSampler's bit for bit.
# estimate_gamma runs GammaEstimator over a dataset with a UNet2DModel. Needs `pip install
# tigercore[diffusers]`. Tests: tests/test_dpm_diffusers.py (tiny UNet2DModel, no downloads).
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as e:                                        # pragma: no cover - exercised without diffusers
    raise ImportError("tigercore.dpm.diffusers needs diffusers: pip install 'tigercore[diffusers]'") from e

from .gamma import ESTIMATORS, GammaEstimator, GammaTable
from .sampler import VARIANCES, resolve_eta, reverse_step, scalar_step_variance
from .schedule import NoiseSchedule
from .trajectory import Trajectory, _path, linear_trajectory, optimal_trajectory, quad_ddim_trajectory
from .variance import DIAG_KINDS

__all__ = ["AnalyticDPMScheduler", "AnalyticDPMSchedulerOutput", "estimate_gamma", "GAMMA_FILE"]

GAMMA_FILE = "analytic_dpm_gamma.pt"        # written next to scheduler_config.json by save_pretrained
TRAJECTORIES = ("even", "quad", "optimal")


@dataclass
class AnalyticDPMSchedulerOutput(BaseOutput):
    """``prev_sample`` x_s (the next model input, or the final sample when s = 0) and
    ``pred_original_sample`` x̂_0 (clamped if ``clip_sample``)."""

    prev_sample: Tensor
    pred_original_sample: Optional[Tensor] = None


def _betas(num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str,
           trained_betas) -> NoiseSchedule:
    """The forward process of a diffusers config, in float64 (diffusers computes it in float32;
    the difference, ~1e-8 relative, is far below what a trained model resolves)."""
    N = int(num_train_timesteps)
    if trained_betas is not None:
        return NoiseSchedule.from_betas(np.asarray(trained_betas, dtype=np.float64))
    if beta_schedule == "linear":
        return NoiseSchedule.linear(N, beta_start, beta_end)
    if beta_schedule == "scaled_linear":
        return NoiseSchedule.from_betas(np.linspace(beta_start ** 0.5, beta_end ** 0.5, N, dtype=np.float64) ** 2)
    if beta_schedule == "squaredcos_cap_v2":
        return NoiseSchedule.cosine(N)
    raise NotImplementedError(f"beta_schedule {beta_schedule!r} is not supported "
                              "(linear, scaled_linear, squaredcos_cap_v2 or trained_betas)")


class AnalyticDPMScheduler(SchedulerMixin, ConfigMixin):
    """Analytic-DPM reverse process as a diffusers scheduler.

    Build it from a trained model's scheduler config and give it a Γ table::

        sched = AnalyticDPMScheduler.from_config(pipe.scheduler.config)
        sched.set_gamma(table)            # GammaTable, a saved table's path, or an official ms_eps
        sched.set_timesteps(10)           # trajectory from the config ("even"), or trajectory="optimal"

    Timesteps follow diffusers' convention: ``timesteps`` holds t = n − 1 ∈ 0..N−1 (descending),
    the value a ``UNet2DModel`` trained with DDPMScheduler expects; n ∈ 1..N is tigercore's index
    (``schedule``). Config (all stored by ``register_to_config``; the diffusers keys keep their
    DDPMScheduler meaning):

    * ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` ("linear",
      "scaled_linear", "squaredcos_cap_v2"), ``trained_betas``: the forward process;
    * ``prediction_type``: "epsilon", "v_prediction" or "sample" (converted to ε̂);
    * ``clip_sample``: clamp x̂_0 to [−1, 1] (the official clip_x0; ``clip_sample_range`` must be 1);
    * ``kind`` ("ddpm" or "ddim") and ``eta`` (None: 1 for "ddpm"; "ddim" needs it): the mean
      form and λ² = η²β̃; an ``eta`` passed to :meth:`step` (DDIMPipeline does) selects the DDIM
      form with that η for that step;
    * ``variance``: "analytic" (needs the Γ table), "npr" / "sn" (the model outputs 2C channels:
      ε̂ then the head g or h), "eps", "beta" or "beta_tilde";
    * ``trajectory``: default of :meth:`set_timesteps` ("even", "quad" or "optimal");
    * ``clip_cov`` (True: cov_x0 ∈ [0, 1]; a float: [0, value]), ``clip_pixel`` (y of the σ² clamp
      on the step landing on x_{τ1}, e.g. 2 for DDPM-type and 1 for DDIM-type runs), ``avg_cov``.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
                 prediction_type: str = "epsilon", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 kind: str = "ddpm", eta: Optional[float] = None, variance: str = "analytic",
                 trajectory: str = "even", clip_cov: Union[bool, float] = True, clip_pixel: Optional[float] = None,
                 avg_cov: bool = False, thresholding: bool = False, rescale_betas_zero_snr: bool = False):
        if thresholding:
            raise NotImplementedError("AnalyticDPMScheduler does not implement dynamic thresholding")
        if rescale_betas_zero_snr:
            raise NotImplementedError("zero-terminal-SNR schedules (ᾱ_N = 0) have no Analytic-DPM variance here")
        if clip_sample and float(clip_sample_range) != 1.0:
            raise NotImplementedError("clip_sample_range != 1: Analytic-DPM's clips assume data in [-1, 1] "
                                      "(rescale the data, or set clip_sample=False)")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if trajectory not in TRAJECTORIES:
            raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
        self._eta = resolve_eta(kind, eta, "AnalyticDPMScheduler")
        self.schedule = _betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        self.alphas_cumprod = self.schedule.alpha_bar[1:].to(torch.float32)      # diffusers' ᾱ_t, t = n − 1
        self.init_noise_sigma = 1.0
        self.gamma_table: Optional[GammaTable] = None
        self.num_inference_steps: Optional[int] = None
        self._steps = torch.arange(1, self.schedule.num_timesteps + 1)          # n, ascending
        self.timesteps = (self._steps - 1).flip(0)
        self._index = {}
        self._step_var: Optional[Tensor] = None

    # ------------------------------------------------------------------ Γ table
    def set_gamma(self, table) -> "AnalyticDPMScheduler":
        """Use ``table`` for the analytic variance and the optimal trajectory: a :class:`GammaTable`,
        the path of one saved by ``GammaTable.save``, or an official Γ vector (``*.ms_eps.pth`` /
        ``.npy`` path, tensor or array; read by ``GammaTable.from_ms_eps``). Returns self."""
        N = self.schedule.num_timesteps
        if isinstance(table, GammaTable):
            t = table
        elif isinstance(table, (str, bytes)) or hasattr(table, "__fspath__"):
            try:
                t = GammaTable.load(table)
            except ValueError:
                t = GammaTable.from_ms_eps(table, num_timesteps=N)
        else:
            t = GammaTable.from_ms_eps(table, num_timesteps=N)
        if t.num_timesteps != N:
            raise ValueError(f"the Γ table has N = {t.num_timesteps}, the scheduler N = {N}")
        self.gamma_table = t
        if self.num_inference_steps is not None:
            self._prepare_variances()
        return self

    # ------------------------------------------------------------------ trajectory
    def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Union[str, torch.device, None] = None,
                      timesteps: Optional[Sequence[int]] = None, trajectory: Union[str, Trajectory, None] = None):
        """Choose the K sampling steps. ``trajectory``: "even" (the official even spacing), "quad"
        (DDIM's quadratic one), "optimal" (the KL-optimal DP on the Γ table), or a
        :class:`Trajectory` / ascending tensor of n ∈ 1..N; default: the config's. ``timesteps``
        instead gives diffusers-convention values t = n − 1 (descending, as diffusers' custom
        timesteps). ``self.timesteps`` holds t = τ_k − 1, descending, on ``device``."""
        sch = self.schedule
        N = sch.num_timesteps
        if timesteps is not None:
            if num_inference_steps is not None or trajectory is not None:
                raise ValueError("pass either timesteps or num_inference_steps / trajectory")
            t = torch.as_tensor(list(timesteps), dtype=torch.long)
            if t.numel() > 1 and not bool((t[1:] < t[:-1]).all()):
                raise ValueError("custom timesteps must be in descending order")
            steps = _path(sch, (t + 1).flip(0))
        elif trajectory is not None and not isinstance(trajectory, str):
            steps = _path(sch, trajectory)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps (or timesteps / a trajectory)")
            name = trajectory or self.config.trajectory
            K = int(num_inference_steps)
            if name == "even":
                steps = linear_trajectory(N, K).timesteps
            elif name == "quad":
                steps = quad_ddim_trajectory(N, K).timesteps
            elif name == "optimal":
                if self.gamma_table is None:
                    raise ValueError("trajectory='optimal' needs a Γ table: call set_gamma(...) first")
                steps = optimal_trajectory(sch, self.gamma_table, K).timesteps
            else:
                raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {name!r}")
        self._steps = steps
        self.num_inference_steps = int(steps.numel())
        self.timesteps = (steps - 1).flip(0).to(device) if device is not None else (steps - 1).flip(0)
        self._index = {int(n): i for i, n in enumerate(steps.tolist())}
        self._prepare_variances()

    def _prepare_variances(self) -> None:
        """σ² of every step t → s, s ≥ 1, for the config's kind/η and a scalar variance."""
        v = self.config.variance
        if v == "analytic" and self.gamma_table is None:
            raise ValueError("variance='analytic' needs a Γ table: call set_gamma(...) "
                             "(estimate one with tigercore.dpm.diffusers.estimate_gamma)")
        self._step_var = None
        if v in DIAG_KINDS or self._steps.numel() < 2:
            return
        s, t = self._steps[:-1], self._steps[1:]
        self._step_var = scalar_step_variance(self.schedule, v, s, t, eta=self._eta, delta=self._delta(),
                                              clip_cov=self.config.clip_cov, clip_pixel=self.config.clip_pixel,
                                              first_step=int(self._steps[0]))

    def _delta(self) -> Optional[Tensor]:
        return None if self.gamma_table is None else self.gamma_table.one_minus_gamma

    @property
    def trajectory_timesteps(self) -> Tensor:
        """The trajectory τ_1 < … < τ_K in tigercore's index n ∈ 1..N (ascending; ``timesteps`` + 1,
        reversed): what AnalyticSampler, nelbo or estimate_gamma(timesteps=...) take."""
        return self._steps.clone()

    @property
    def step_variances(self) -> Optional[Tensor]:
        """float64 σ² of the steps τ_{k+1} → τ_k, k = 1..K−1 (ascending), for the scalar variances."""
        return self._step_var

    # ------------------------------------------------------------------ model output
    def _eps(self, model_output: Tensor, sample: Tensor, n: int):
        """(ε̂, head) from a model output: split 2C channels, convert v / x_0 predictions to ε̂."""
        C = sample.shape[1]
        head = None
        if model_output.shape[1] == 2 * C:
            model_output, head = model_output[:, :C], model_output[:, C:]
        if self.config.variance in ("npr", "sn") and head is None:
            raise ValueError(f"variance={self.config.variance!r} needs a model output of 2C channels (ε̂, head)")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(model_output.shape)}, sample {tuple(sample.shape)}")
        pt = self.config.prediction_type
        if pt == "epsilon":
            return model_output, head
        a = math.sqrt(float(self.schedule.alpha_bar[n]))
        b = math.sqrt(float(self.schedule.beta_bar[n]))
        if pt == "v_prediction":                       # v = √ᾱ ε − √β̄ x_0  ⇒  ε = √ᾱ v + √β̄ x_t
            return a * model_output + b * sample, head
        return (sample - a * model_output) / b, head   # "sample": ε = (x_t − √ᾱ x̂_0)/√β̄

    # ------------------------------------------------------------------ diffusers API
    def scale_model_input(self, sample: Tensor, timestep: Optional[int] = None) -> Tensor:
        return sample

    def step(self, model_output: Tensor, timestep: Union[int, Tensor], sample: Tensor,
             generator: Union[torch.Generator, List[torch.Generator], None] = None, return_dict: bool = True,
             eta: Optional[float] = None, use_clipped_model_output: Optional[bool] = None,
             variance_noise: Optional[Tensor] = None, **kwargs):
        """One reverse step from ``timestep`` (diffusers convention t = n − 1, one of
        ``self.timesteps``) to the previous trajectory point (docs/semantics-dpm.md §6, §13).

        ``eta`` (as DDIMPipeline passes it) selects the DDIM-form mean with λ² = η²β̃ for this
        step; without it the config's ``kind`` and ``eta`` apply. ``variance_noise`` replaces the
        N(0, I) draw (which uses ``generator``, as diffusers' randn_tensor). The last step (s = 0)
        returns the mean without noise. ``use_clipped_model_output`` is accepted and ignored (the
        DDIM-form mean uses the raw ε̂, as the official code).
        """
        n = int(timestep) + 1
        if n not in self._index:
            raise ValueError(f"timestep {int(timestep)} is not one of the timesteps set by set_timesteps "
                             f"(call set_timesteps first)")
        i = self._index[n]
        s = int(self._steps[i - 1]) if i > 0 else 0
        if eta is None:
            kind, eta_v, var = self.config.kind, self._eta, None
            if self._step_var is not None and s > 0:
                var = float(self._step_var[i - 1])
        else:
            kind, eta_v, var = "ddim", resolve_eta("ddim", eta, "AnalyticDPMScheduler.step"), None
        eps_hat, head = self._eps(model_output, sample, n)
        noise = None
        if s > 0:
            noise = variance_noise if variance_noise is not None else randn_tensor(
                sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev, x0 = reverse_step(self.schedule, sample, eps_hat, s, n, kind=kind, eta=eta_v,
                                variance=self.config.variance, delta=self._delta(), head=head, step_variance=var,
                                clip_x0=bool(self.config.clip_sample), clip_cov=self.config.clip_cov,
                                clip_pixel=self.config.clip_pixel, first_step=int(self._steps[0]),
                                avg_cov=self.config.avg_cov, noise=noise)
        if not return_dict:
            return (prev, x0)
        return AnalyticDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_n = √ᾱ_n x_0 + √β̄_n ε for diffusers timesteps t = n − 1 (a [B] tensor)."""
        n = torch.as_tensor(timesteps).to("cpu", torch.long) + 1
        if n.dim() == 0:
            n = n.expand(original_samples.shape[0])
        return self.schedule.marginal(original_samples, n, noise)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """Save the config (scheduler_config.json) and, if set, the Γ table (``GAMMA_FILE``)."""
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        if self.gamma_table is not None:
            self.gamma_table.save(os.path.join(save_directory, GAMMA_FILE))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, subfolder: Optional[str] = None,
                        return_unused_kwargs: bool = False, **kwargs):
        """Load the config and, from a local directory, the Γ table saved beside it."""
        out = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder,
                                      return_unused_kwargs=return_unused_kwargs, **kwargs)
        sched = out[0] if return_unused_kwargs else out
        if pretrained_model_name_or_path is not None:
            path = os.path.join(str(pretrained_model_name_or_path), subfolder or "", GAMMA_FILE)
            if os.path.isfile(path):
                sched.set_gamma(GammaTable.load(path))
        return out


# ---------------------------------------------------------------------- Γ estimation
def unet_eps_model(unet: Callable, scheduler: AnalyticDPMScheduler) -> Callable[[Tensor, Tensor], Tensor]:
    """``model(x_n, n) -> ε̂`` for tigercore.dpm from a diffusers UNet: calls ``unet(x_n, n − 1)``
    (diffusers' timestep convention), takes ``.sample``, keeps the first C channels of a 2C-channel
    output and converts v / x_0 predictions to ε̂ as :meth:`AnalyticDPMScheduler.step` does."""
    def model(x: Tensor, n: Tensor) -> Tensor:
        dtype = getattr(unet, "dtype", x.dtype)
        out = unet(x.to(dtype), n - 1)
        out = getattr(out, "sample", out)
        out = out[0] if isinstance(out, (tuple, list)) else out
        C = x.shape[1]
        if out.shape[1] == 2 * C:
            out = out[:, :C]
        pt = scheduler.config.prediction_type
        if pt == "epsilon":
            return out
        nn = n.cpu()
        a = scheduler.schedule.coef("alpha_bar", nn, x).sqrt()
        b = scheduler.schedule.coef("beta_bar", nn, x).sqrt()
        out = out.to(x.dtype)
        return a * out + b * x if pt == "v_prediction" else (x - a * out) / b
    return model


class _Batches:
    """x_0 batches from a tensor [M, ...], a torch Dataset or any iterable of batches (tensors,
    tuples/lists whose first item is x_0, or dicts with ``image_key``)."""

    def __init__(self, data, batch_size: int, image_key: Optional[str]):
        self.data, self.batch_size, self.image_key = data, int(batch_size), image_key
        if isinstance(data, Tensor):
            self._len = math.ceil(data.shape[0] / self.batch_size)
        elif isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
            self.data = torch.utils.data.DataLoader(data, batch_size=self.batch_size, shuffle=False)
            self._len = len(self.data)
        else:
            self._len = len(data) if hasattr(data, "__len__") else None

    def __len__(self):
        if self._len is None:
            raise TypeError("unknown length")
        return self._len

    def _pick(self, batch):
        if isinstance(batch, dict):
            keys = [self.image_key] if self.image_key else ["images", "pixel_values", "image", "input"]
            for k in keys:
                if k in batch:
                    return batch[k]
            raise KeyError(f"no image key among {keys} in a batch with keys {list(batch)}; pass image_key")
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def __iter__(self):
        if isinstance(self.data, Tensor):
            for i in range(0, self.data.shape[0], self.batch_size):
                yield self.data[i:i + self.batch_size]
        else:
            for batch in self.data:
                yield self._pick(batch)


def estimate_gamma(unet: Callable, scheduler: AnalyticDPMScheduler, data: Union[Tensor, Iterable], *,
                   timesteps: Union[str, Sequence[int], Tensor] = "all", estimator: str = "cv",
                   batch_size: int = 64, repeats: int = 1, image_key: Optional[str] = None,
                   generator: Optional[torch.Generator] = None, device=None, progress: bool = True,
                   max_batches: Optional[int] = None) -> GammaTable:
    """Estimate the Γ table of ``unet`` on ``data`` (images in [−1, 1], the model's training
    range) with :class:`tigercore.dpm.GammaEstimator`; returns the :class:`GammaTable`.

    ``data``: a tensor [M, C, H, W] (cut into ``batch_size`` batches), a torch Dataset, or a
    DataLoader / iterable of batches (tensors, tuples whose first item is x_0, or dicts: the
    ``image_key`` entry, else "images", "pixel_values", "image" or "input"). ``timesteps``:
    "all" (every n for every datum: N·M model evaluations, the official scheme), "random" (one n
    per datum) or a list of n ∈ 1..N (e.g. ``scheduler.trajectory_timesteps``). A tqdm bar
    counts model calls when ``progress``. ``device`` defaults to the UNet's. Then
    ``scheduler.set_gamma(table)``; ``table.save(path)`` keeps it.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if device is None and isinstance(unet, torch.nn.Module):
        p = next(unet.parameters(), None)
        device = p.device if p is not None else None
    was_training = getattr(unet, "training", False)
    if isinstance(unet, torch.nn.Module):
        unet.eval()
    try:
        est = GammaEstimator(scheduler.schedule, estimator)
        return est.estimate(unet_eps_model(unet, scheduler), _Batches(data, batch_size, image_key),
                            timesteps=timesteps, repeats=repeats, generator=generator, device=device,
                            progress=progress, max_batches=max_batches)
    finally:
        if isinstance(unet, torch.nn.Module) and was_training:
            unet.train()
