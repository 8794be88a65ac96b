"""torch.compile: a compiled training step with each optimizer gives the same parameters as the
eager step (the ops have fake kernels, so the custom op is captured in the graph)."""
import pytest
import torch

from tigercore.optim import Lion, Tiger, tiger_param_groups


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Flatten(), torch.nn.Linear(32, 8),
                               torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))


def _make(name, model):
    if name == "tiger":
        return Tiger(tiger_param_groups(model), lr=1e-2, grad_accum_steps=2)
    return Lion(model.parameters(), lr=1e-3, weight_decay=0.1)


@pytest.mark.parametrize("name", ["lion", "tiger"])
def test_compiled_training_step_matches_eager(name):
    torch._dynamo.reset()
    x = torch.randint(0, 16, (32, 4))
    y = torch.randn(32, 1)
    results = []
    for compiled in (False, True):
        model = _model()
        opt = _make(name, model)

        def train_step():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss

        step = torch.compile(train_step) if compiled else train_step
        for _ in range(4):
            step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lion", "tiger"])
def test_optimizer_step_compiles_fullgraph(name):
    torch._dynamo.reset()
    model = _model()
    opt = _make(name, model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # state initialised eagerly
    ref_model = _model()
    ref_opt = _make(name, ref_model)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        q.grad = p.grad.clone()
    ref_opt.step()
    torch.compile(opt.step, fullgraph=True)()
    ref_opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
