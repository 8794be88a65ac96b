"""tiger_param_groups: classes from module types (docs/semantics.md, "Tiger", classes), tied embeddings,
overrides, and plain parameter lists (ndim rule)."""
import pytest
import torch
from torch import nn

from tigercore.optim import Tiger, classify_parameters, tiger_param_groups


class LlamaRMSNorm(nn.Module):  # a custom norm, recognised by its class name
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.ln = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.rms = LlamaRMSNorm(8)
        self.attn = nn.MultiheadAttention(8, 2)  # in_proj_bias: a "*_bias" attribute
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.tok.weight  # tied: E takes precedence over K


def test_classes_by_module_type():
    c = classify_parameters(TinyLM())
    assert c["tok.weight"] == ("E", 0.0)
    assert c["ln.weight"] == ("V", 1.0) and c["ln.bias"] == ("V", 0.0)
    assert c["bn.weight"] == ("V", 1.0) and c["gn.weight"] == ("V", 1.0) and c["rms.weight"] == ("V", 1.0)
    assert c["proj.weight"] == ("K", 0.0) and c["proj.bias"] == ("V", 0.0)
    assert c["attn.in_proj_weight"] == ("K", 0.0) and c["attn.in_proj_bias"] == ("V", 0.0)
    assert "head.weight" not in c  # the tied tensor is classified once, as E


def test_groups_and_overrides():
    model = TinyLM()
    groups = tiger_param_groups(model, overrides={"ln.weight": ("V", 0.0)}, lr=2e-3)
    by = {(g["tiger_class"], g["shrink_center"]): g for g in groups}
    assert set(by) == {("K", 0.0), ("E", 0.0), ("V", 1.0), ("V", 0.0)}
    assert all(g["lr"] == 2e-3 for g in groups)
    assert any(p is model.ln.weight for p in by[("V", 0.0)]["params"])
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    with pytest.raises(KeyError, match="unknown"):
        tiger_param_groups(model, overrides={"nope": "K"})


def test_layernorm_gain_steps_half_lr_without_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = Tiger(tiger_param_groups(model), lr=1e-2, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    torch.testing.assert_close(model[1].weight.detach(), torch.full((4,), 1 - 0.5e-2))


def test_plain_list_uses_ndim_rule():
    w, b = nn.Parameter(torch.full((3, 3), 2.0)), nn.Parameter(torch.ones(3))
    opt = Tiger([w, b], lr=1e-2, weight_decay=0.0)
    w.grad, b.grad = torch.ones(3, 3), torch.ones(3)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((3, 3), 2.0 - 1e-2 * 2.0))  # K: lr*RMS
    torch.testing.assert_close(b.detach(), torch.full((3,), 1.0 - 0.5e-2))  # V: 0.5*lr
