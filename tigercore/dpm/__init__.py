# Analytic-DPM: analytic optimal reverse variances for pretrained diffusion models
# (Bao et al., ICLR 2022, arXiv:2201.06503; NPR/SN-DPM, ICML 2022, arXiv:2206.07309).
# Semantics: docs/semantics-dpm.md. Schedules (schedule.py), δ = 1 − Γ estimation (gamma.py), σ² (variance.py),
# trajectories and the DP (trajectory.py), sampling (sampler.py), NELBO (nll.py), demos (demo.py,
# digits.py); the diffusers scheduler is tigercore.dpm.diffusers (optional, imported on demand).
# Pure-torch float64 reductions behind the native ops: tigercore/reference/dpm.py.
from .schedule import NoiseSchedule, call_eps_model
from .gamma import ESTIMATORS, GammaEstimator, GammaTable
from .variance import (cov_x0, diag_reverse_variance, gamma_coef, lambda_sq, pixel_clip_bound,
                       reverse_variance)
from .trajectory import (Trajectory, dp_seg_trajectory, dp_vb_trajectory, linear_trajectory, optimal_trajectory,
                         quad_ddim_trajectory, trajectory_cost, trajectory_kl_per_dim)
from .sampler import VARIANCES, AnalyticSampler, reverse_step
from .nll import NelboResult, NelboTerms, log_discretized_normal, nelbo, nelbo_terms

__all__ = [
    "NoiseSchedule", "call_eps_model",
    "ESTIMATORS", "GammaEstimator", "GammaTable",
    "cov_x0", "diag_reverse_variance", "gamma_coef", "lambda_sq", "pixel_clip_bound", "reverse_variance",
    "Trajectory", "dp_seg_trajectory", "dp_vb_trajectory", "linear_trajectory", "optimal_trajectory",
    "quad_ddim_trajectory", "trajectory_cost", "trajectory_kl_per_dim",
    "VARIANCES", "AnalyticSampler", "reverse_step",
    "NelboResult", "NelboTerms", "log_discretized_normal", "nelbo", "nelbo_terms",
]
