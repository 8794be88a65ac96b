"""tiger_param_groups(model): Tiger's parameter classes from module types (docs/semantics.md, "Tiger", classes).

  nn.Embedding / nn.EmbeddingBag weight            -> E  (per-row RMS step)
  weight of LayerNorm, RMSNorm, GroupNorm, BatchNorm*, InstanceNorm*, or of any module whose
  class name ends in "Norm" (e.g. LlamaRMSNorm)    -> V, shrink centre 1
  every bias (attribute `bias` or `*_bias`)         -> V, shrink centre 0
  everything else                                   -> K  (whole-tensor RMS step)
A tensor shared by several modules (tied embeddings) is classified once; E takes precedence.
"""
from __future__ import annotations

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORMS = _NORMS + (nn.RMSNorm,)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORMS) or type(module).__name__.lower().endswith("norm")


def classify_parameters(model: nn.Module, overrides: dict | None = None) -> dict:
    """Map parameter name -> (tiger_class, shrink_center). ``overrides`` maps names to a class
    ("K"/"E"/"V") or a (class, centre) pair, e.g. {"final_norm.weight": ("V", 0.0)}."""
    overrides = dict(overrides or {})
    by_tensor: dict[int, tuple[str, tuple[str, float]]] = {}
    for mod_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{pname}" if mod_name else pname
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and pname == "weight":
                cls = ("E", 0.0)
            elif pname == "bias" or pname.endswith("_bias"):
                cls = ("V", 0.0)
            elif _is_norm(module) and pname == "weight":
                cls = ("V", 1.0)
            else:
                cls = ("K", 0.0)
            prev = by_tensor.get(id(p))
            if prev is None or (cls[0] == "E" and prev[1][0] != "E"):
                by_tensor[id(p)] = (prev[0] if prev else full, cls)
    names = {id(p): n for n, p in model.named_parameters()}
    result = {}
    for pid, (first_name, cls) in by_tensor.items():
        name = names.get(pid, first_name)
        result[name] = cls
    unknown = set(overrides) - set(result)
    if unknown:
        raise KeyError(f"tiger_param_groups: overrides name unknown parameters: {sorted(unknown)}")
    for name, ov in overrides.items():
        cls = (ov, 1.0 if ov == "V" and result[name] == ("V", 1.0) else 0.0) if isinstance(ov, str) else tuple(ov)
        if cls[0] not in ("K", "E", "V"):
            raise ValueError(f"tiger_param_groups: override for {name!r} must be 'K', 'E' or 'V', got {cls[0]!r}")
        result[name] = (cls[0], float(cls[1]))
    return result


def tiger_param_groups(model: nn.Module, overrides: dict | None = None, **group_options) -> list[dict]:
    """Parameter groups for ``Tiger``: one per (class, shrink centre), in a stable order.
    ``group_options`` (e.g. lr=...) are copied into every group."""
    classes = classify_parameters(model, overrides)
    params = dict(model.named_parameters())
    groups: dict[tuple[str, float], list[torch.Tensor]] = {}
    for name, cls in classes.items():
        if params[name].requires_grad:
            groups.setdefault(cls, []).append(params[name])
    order = [("K", 0.0), ("E", 0.0), ("V", 1.0), ("V", 0.0)]
    keys = [k for k in order if k in groups] + [k for k in groups if k not in order]
    return [{"params": groups[k], "tiger_class": k[0], "shrink_center": k[1], **group_options} for k in keys]
