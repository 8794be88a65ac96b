"""Scenarios run inside real gloo processes (tests/test_distributed.py spawns them): Lion and Tiger
on FSDP2 / tensor-parallel / 2-D-mesh / DDP models against the same optimizer in one process on
the full tensors, given the same gradients (the sharded model's reduced gradients, gathered).
Lion must be bitwise equal; Tiger bitwise equal whenever its float64 sums of squares round to
the same op-math step size, and those sums within the summation-order bound of the exact sum
(math.fsum). Failures are collected (never raised mid-step) so the ranks stay in lockstep.
"""
from __future__ import annotations

import copy
import json
import math
import os
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tigercore  # noqa: F401  (loads the native kernels)
from tigercore.optim import Lion, Tiger, tiger_param_groups
from torch.distributed.tensor import DTensor, distribute_tensor

U64 = 2.0 ** -53


# ---- collective counting -----------------------------------------------------------------------------------
class CollectiveCounter(TorchDispatchMode):
    """Counts the collectives dispatched while active (c10d and functional collectives, whoever
    calls them: the optimizer, DTensor redistribution, FSDP), with their tensor sizes in bytes."""

    NOT_COLLECTIVES = ("wait_tensor", "_wrap_tensor_autograd")

    def __enter__(self):
        self.calls = []
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in ("c10d", "_c10d_functional") and \
                not any(x in func.name() for x in self.NOT_COLLECTIVES):
            first = args[0] if args else None
            if isinstance(first, (list, tuple)) and first:
                first = first[0]
            nbytes = first.numel() * first.element_size() if isinstance(first, torch.Tensor) else None
            self.calls.append((func.name().split("::")[-1].split(".")[0], nbytes))
        return func(*args, **(kwargs or {}))


# ---- helpers -------------------------------------------------------------------------------------------------
def is_dtensor(t):
    return isinstance(t, DTensor)


def local(t):
    return t.to_local() if isinstance(t, DTensor) else t


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def global_rows(p):
    """Global row (last-dimension slice) of each local row of DTensor p, from torch's own
    sharding of a tensor of flat indices (independent of tigercore's layout code)."""
    shape = tuple(p.shape)
    ids = torch.arange(math.prod(shape), dtype=torch.int64).view(shape)
    mine = distribute_tensor(ids, p.device_mesh, p.placements, src_data_rank=None).to_local()
    return (mine.reshape(-1, mine.shape[-1])[:, 0] // shape[-1]).tolist() if mine.numel() else []


class Failures(list):
    def expect(self, cond, msg):
        if not cond:
            self.append(msg)


def sums_bound_ok(s, exact, n):
    """|s - exact| <= gamma_{n-1} * exact: any order of a float64 sum of n non-negative terms."""
    k = max(n - 1, 0)
    gamma = k * U64 / (1 - k * U64)
    return abs(s - exact) <= gamma * exact + 1e-300


def exact_sumsq(w: torch.Tensor) -> float:
    return math.fsum((w.double().reshape(-1) ** 2).tolist())


def working_copy(opt, p):
    st = opt.state[p]
    return full(st["master_param"]) if "master_param" in st else full(p.detach())


def tiger_class(opt, p):
    for g in opt.param_groups:
        if any(q is p for q in g["params"]):
            return g["tiger_class"] or ("K" if p.dim() >= 2 else "V")
    raise KeyError


def eta32(lr, s, n, floor=0.0):
    e = lr * max(math.sqrt(s / n), floor)
    return torch.tensor(e, dtype=torch.float64).float().item()


def check_tiger_sums(f, tag, opt, pre, record, lr):
    """Every global sum of the step within the order bound of the exact sum; returns whether each
    op-math step size equals the single-process one (then the step must be bitwise equal)."""
    same_eta = True
    seen = 0
    for entry in record:
        cls = entry["class"]
        if cls == "V":
            continue
        row0 = 0
        for p in entry["params"]:
            rows_here = 1 if cls == "K" else math.prod(local(p).shape[:-1])
            mine = entry["sums"][row0:row0 + rows_here].tolist()
            row0 += rows_here
            w = pre[id(p)]  # the single-process working copy before the step
            if cls == "K":
                rows, ids = [w.reshape(-1)], [0]
            else:
                rows = list(w.reshape(-1, w.shape[-1])) if w.dim() else [w.reshape(-1)]
                ids = global_rows(p)
            ref_sums = torch.ops.tigercore.tiger_stats([w.contiguous()], [torch.zeros_like(w).contiguous()], [], [],
                                                       tiger_class=cls, precision="none")[0].tolist()
            for s, gid in zip(mine, ids):
                row = rows[gid]
                exact = exact_sumsq(row)
                f.expect(sums_bound_ok(s, exact, row.numel()),
                         f"{tag}: global sum {s!r} of a {cls} tensor row {gid} is not within the order bound of "
                         f"the exact {exact!r}")
                if eta32(lr, s, row.numel()) != eta32(lr, ref_sums[gid], row.numel()):
                    same_eta = False
                seen += 1
    return same_eta, seen


def compare(f, tag, model, ref, opt, ref_opt, *, exact=True, counters=True):
    for (name, p), (_, rp) in zip(model.named_parameters(), ref.named_parameters()):
        a, b = full(p.detach()), rp.detach()
        if exact:
            f.expect(torch.equal(a, b), f"{tag}: parameter {name} differs (max |diff| "
                                        f"{(a.double() - b.double()).abs().max().item():.3g})")
        for key in ("exp_avg", "master_param", "kahan_comp"):
            if key in ref_opt.state[rp]:
                f.expect(torch.equal(full(opt.state[p][key]), ref_opt.state[rp][key]), f"{tag}: state {key} of {name} differs")
        if counters:  # (a skipped step advances no counter: the reference does not see it)
            f.expect(int(opt.state[p]["step"]) == int(ref_opt.state[rp]["step"]), f"{tag}: step counter of {name} differs")


# ---- models --------------------------------------------------------------------------------------------------
class Net(nn.Module):
    """Embedding (class E), Linear weights (K), a LayerNorm and biases (V); a [1, 9] weight and a
    [1] bias leave rank 1 of 2 (and ranks 1..3 of 4) with an empty FSDP2 shard."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.lin1 = nn.Linear(6, 9)
        self.norm = nn.LayerNorm(9)
        self.lin2 = nn.Linear(9, 1)
        self.to(dtype)

    def forward(self, idx):
        h = self.emb(idx).mean(1)
        return self.lin2(torch.tanh(self.norm(self.lin1(h)))).float().pow(2).mean()


def net_batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randint(0, 11, (4, 3), generator=g)


def fsdp(model, mesh=None):
    from torch.distributed.fsdp import fully_shard
    for m in (model.emb, model.lin1, model.lin2):
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def make_opt(kind, model, **kw):
    if kind == "lion":
        return Lion(model.parameters(), lr=kw.pop("lr", 3e-2), weight_decay=kw.pop("weight_decay", 0.1), **kw)
    return Tiger(tiger_param_groups(model), lr=kw.pop("lr", 2e-2), **kw)


# ---- the training comparison -------------------------------------------------------------------------------
def train_compare(f, tag, kind, model, ref, *, steps, batch, nan=None, expect_bytes=None, **opt_kw):
    """Steps the sharded model and the single-process reference on the same (gathered) gradients.
    nan: {step: (ranks, parameter name)}: those ranks write NaN into their local gradient shard
    (every replica of a shard, so that Replicate placements stay replicated)."""
    rank = dist.get_rank()
    opt, ref_opt = make_opt(kind, model, **dict(opt_kw)), make_opt(kind, ref, **dict(opt_kw))
    pairs = {id(p): rp for p, rp in zip(model.parameters(), ref.parameters())}
    names = dict(model.named_parameters())
    lr = opt.param_groups[0]["lr"]
    diverged = False
    for step in range(steps):
        model(batch(step, rank)).backward()
        if nan and step in nan and rank in nan[step][0]:
            lg = local(names[nan[step][1]].grad)
            if lg.numel():
                lg.view(-1)[0] = float("nan")
        for p, rp in zip(model.parameters(), ref.parameters()):
            rp.grad = full(p.grad).clone()
        prev = {n: local(p.detach()).clone() for n, p in names.items()}
        pre = {id(p): working_copy(ref_opt, pairs[id(p)]).clone() for p in model.parameters()}
        prev_m = {n: local(opt.state[p]["exp_avg"]).clone() for n, p in names.items()}
        record = opt.__dict__["_dist_record"] = [] if kind == "tiger" else None
        with CollectiveCounter() as counter:
            opt.step()
        calls = counter.calls
        ref_opt.step()
        opt.zero_grad()
        ref_opt.zero_grad()
        if kind == "lion":
            f.expect(not calls, f"{tag} step {step}: Lion made collectives {calls}")
        else:
            f.expect(len(calls) <= 1 and all(c[0] == "allreduce_" for c in calls),
                     f"{tag} step {step}: Tiger made {calls} (one all_reduce at most)")
            if expect_bytes is not None:
                f.expect([c[1] for c in calls] == ([expect_bytes] if expect_bytes else []),
                         f"{tag} step {step}: collective bytes {calls}, expected {expect_bytes}")
        same_eta = True
        if kind == "tiger" and not diverged:
            same_eta, _ = check_tiger_sums(f, f"{tag} step {step}", opt, pre, record, lr)
        if not diverged:
            compare(f, f"{tag} step {step}", model, ref, opt, ref_opt, exact=same_eta)
            diverged = not same_eta  # a different fp32 step size: trajectories part; sums still checked above
        if nan and step in nan:  # every rank shrank its shard of that tensor and kept its momentum
            name = nan[step][1]
            p = names[name]
            cls = tiger_class(opt, p) if kind == "tiger" else None
            if kind == "tiger" and p.dtype == torch.float32 and cls != "V":
                shrunk = prev[name] * torch.tensor(0.99, dtype=torch.float32)
                f.expect(torch.equal(local(p.detach()), shrunk), f"{tag}: rank {rank} did not shrink {name}")
                f.expect(torch.equal(local(opt.state[p]["exp_avg"]), prev_m[name]),
                         f"{tag}: rank {rank} changed the momentum of {name} on a non-finite step")
    return opt, ref_opt


# ---- scenarios -----------------------------------------------------------------------------------------------
def _fresh(dtype=torch.float32, seed=1234, cls=Net):
    torch.manual_seed(seed)
    model = cls(dtype)
    return model, copy.deepcopy(model)


def net_bytes(world, guard=True):
    """Collective bytes of a Tiger step on fsdp(Net()) ([note: one collective]): K weights lin1, lin2
    (2 slots); emb rows are whole (0); one flag per sharded tensor when the guard is on (7)."""
    return 8 * (2 + (7 if guard else 0))


def sc_lion_fsdp(f, ctx):
    model, ref = _fresh()
    train_compare(f, "lion fsdp", "lion", fsdp(model), ref, steps=4, batch=net_batch)


def sc_lion_bf16(precision):
    def run(f, ctx):
        model, ref = _fresh(torch.bfloat16)
        train_compare(f, f"lion bf16 {precision}", "lion", fsdp(model), ref, steps=3, batch=net_batch,
                      precision=precision, lr=3e-3)
    return run


def sc_tiger_fsdp(f, ctx):
    model, ref = _fresh()
    world = dist.get_world_size()
    train_compare(f, "tiger fsdp", "tiger", fsdp(model), ref, steps=5, batch=net_batch,
                  nan={2: ((1,), "lin1.weight"), 3: ((world - 1,), "emb.weight")}, expect_bytes=net_bytes(world))


def sc_tiger_guard_off(f, ctx):
    model, ref = _fresh()
    train_compare(f, "tiger guard off", "tiger", fsdp(model), ref, steps=3, batch=net_batch,
                  nonfinite_guard=False, expect_bytes=net_bytes(dist.get_world_size(), guard=False))


def sc_tiger_accum(f, ctx):
    model, ref = _fresh()
    train_compare(f, "tiger accum", "tiger", fsdp(model), ref, steps=7, batch=net_batch,
                  grad_accum_steps=3, nan={4: ((0,), "lin1.weight")})


def sc_tiger_bf16(precision):
    def run(f, ctx):
        model, ref = _fresh(torch.bfloat16)
        train_compare(f, f"tiger bf16 {precision}", "tiger", fsdp(model), ref, steps=3, batch=net_batch,
                      precision=precision)
    return run


class TPNet(nn.Module):
    """Embeddings under row (Shard(0)) and column (Shard(1)) sharding and a colwise/rowwise Linear
    pair (weights Shard(0) / Shard(1), biases Shard(0) / Replicate)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.emb_row = nn.Embedding(11, 6)
        self.emb_col = nn.Embedding(9, 8)
        self.up = nn.Linear(14, 12)
        self.down = nn.Linear(12, 3)
        self.to(dtype)

    def forward(self, idx):
        h = torch.cat([self.emb_row(idx), self.emb_col(idx % 9)], -1).mean(1)
        return self.down(torch.relu(self.up(h))).float().pow(2).mean()


def tp(model, mesh):
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    return parallelize_module(model, mesh, {"emb_row": RowwiseParallel(input_layouts=Replicate()),
                                            "emb_col": ColwiseParallel(output_layouts=Replicate()),
                                            "up": ColwiseParallel(), "down": RowwiseParallel()})


def tp_batch(step, rank):  # the same batch on every rank of a tensor-parallel group
    return net_batch(step, 0)


def sc_tp(kind, dtype=torch.float32, precision="master"):
    def run(f, ctx):
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        model, ref = _fresh(dtype, cls=TPNet)
        tp(model, mesh)
        placements = {n: tuple(p.placements) for n, p in model.named_parameters()}
        f.expect(str(placements["emb_row.weight"]) == "(Shard(dim=0),)" and
                 str(placements["emb_col.weight"]) == "(Shard(dim=1),)", f"unexpected TP placements {placements}")
        # K: up.weight, down.weight (2 slots); emb_col rows split: 9 slots; flags of 5 sharded tensors
        nbytes = 8 * (2 + 9 + 5) if kind == "tiger" else None
        train_compare(f, f"tp {kind} {dtype} {precision}", kind, model, ref, steps=4, batch=tp_batch,
                      precision=precision, expect_bytes=nbytes,
                      nan={2: ((dist.get_world_size() - 1,), "emb_col.weight")} if kind == "tiger" else None)
    return run


def sc_tp_stochastic_refused(f, ctx):
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model, _ = _fresh(torch.bfloat16, cls=TPNet)
    tp(model, mesh)
    opt = Lion(model.parameters(), lr=1e-3, precision="stochastic")
    model(tp_batch(0, 0)).backward()
    before = {n: local(p.detach()).clone() for n, p in model.named_parameters()}
    try:
        opt.step()
        f.append("stochastic rounding of a Shard(1) bf16 tensor was not refused")
    except RuntimeError as e:
        f.expect("one run of the tensor's flat offsets" in str(e), f"unexpected message: {e}")
    f.expect(all(torch.equal(local(p.detach()), before[n]) for n, p in model.named_parameters()),
             "a refused step modified a parameter")


def sc_mixed_refused(f, ctx):
    """A DTensor parameter with a plain gradient is refused before anything moves."""
    model, _ = _fresh()
    fsdp(model)
    opt = Tiger(tiger_param_groups(model))
    model(net_batch(0, dist.get_rank())).backward()
    p = model.lin1.weight
    p.grad = torch.zeros(p.shape)
    try:
        opt.step()
        f.append("a plain gradient of a DTensor parameter was not refused")
    except RuntimeError as e:
        f.expect("plain torch.Tensor gradient" in str(e), f"unexpected message: {e}")


def sc_whole_tensor_options_refused(f, ctx):
    """cautious=True (its scale counts the whole tensor; refused at the step) and momentum_bits=8 (a
    shard would split quantisation blocks; refused when the state is made, at construction) are
    refused for DTensor parameters before anything moves."""
    for cls, kw, words in ((Lion, dict(cautious=True), "cautious=True"), (Tiger, dict(cautious=True), "cautious=True"),
                           (Lion, dict(momentum_bits=8), "momentum_bits=8")):
        model, _ = _fresh()
        fsdp(model)
        before = {n: local(p.detach()).clone() for n, p in model.named_parameters()}
        try:
            opt = cls(model.parameters(), **kw)
            model(net_batch(0, dist.get_rank())).backward()
            opt.step()
            f.append(f"{cls.__name__}({kw}) on DTensor parameters was not refused")
        except NotImplementedError as e:
            f.expect(words in str(e) and "DTensor" in str(e), f"unexpected message: {e}")
        f.expect(all(torch.equal(local(p.detach()), before[n]) for n, p in model.named_parameters()),
                 f"a refused {cls.__name__}({kw}) step modified a parameter")


def sc_ddp(f, ctx):
    """DDP: plain replicated tensors; every rank ends with the same parameters, equal to one process
    given the averaged gradient, and the step makes no collective."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    for kind in ("lion", "tiger"):
        model, ref = _fresh()
        ddp = DDP(model)
        opt, ref_opt = make_opt(kind, model), make_opt(kind, ref)
        for step in range(3):
            ddp(net_batch(step, dist.get_rank())).backward()
            for p, rp in zip(model.parameters(), ref.parameters()):
                rp.grad = p.grad.clone()
            with CollectiveCounter() as c:
                opt.step()
            f.expect(not c.calls, f"ddp {kind}: the step made collectives {c.calls}")
            ref_opt.step()
            opt.zero_grad()
            ref_opt.zero_grad()
        compare(f, f"ddp {kind}", model, ref, opt, ref_opt)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        f.expect(all(torch.equal(g, gathered[0]) for g in gathered), f"ddp {kind}: ranks hold different parameters")


def sc_dcp(f, ctx):
    """Save Lion and Tiger state with torch.distributed.checkpoint at world size 2; load it into a
    fresh sharded optimizer (the next steps equal the uninterrupted run); leave a checkpoint and
    the next gradients for the world-size-1 load done by the test process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    out = ctx["out"]
    rank = dist.get_rank()
    for kind in ("lion", "tiger"):
        path = os.path.join(out, f"dcp_{kind}")
        model, _ = _fresh(torch.bfloat16)
        fsdp(model)
        opt = make_opt(kind, model, precision="master")
        for step in range(2):
            model(net_batch(step, rank)).backward()
            opt.step()
            opt.zero_grad()
        osd = get_optimizer_state_dict(model, opt)
        f.expect(is_dtensor(osd["state"]["lin1.weight"]["exp_avg"]), f"dcp {kind}: state saved as plain tensors")
        f.expect(not any(k in st for st in osd["state"].values() for k in ("param_stamp", "sumsq")),
                 f"dcp {kind}: derived state was saved")
        dcp.save({"model": get_model_state_dict(model), "optim": osd}, checkpoint_id=path)
        later = []  # the uninterrupted run: two more steps
        for step in range(2, 4):
            model(net_batch(step, rank)).backward()
            later.append({n: full(p.grad).clone() for n, p in model.named_parameters()})
            opt.step()
            opt.zero_grad()
        want = {n: full(p.detach()) for n, p in model.named_parameters()}
        want_m = {n: full(opt.state[p]["exp_avg"]) for n, p in model.named_parameters()}
        # load at world size 2 into a fresh model and optimizer; replay the same gradients
        model2, _ = _fresh(torch.bfloat16, seed=99)
        fsdp(model2)
        opt2 = make_opt(kind, model2, precision="master")
        sd = {"model": get_model_state_dict(model2), "optim": get_optimizer_state_dict(model2, opt2)}
        dcp.load(sd, checkpoint_id=path)
        set_model_state_dict(model2, sd["model"])
        set_optimizer_state_dict(model2, opt2, sd["optim"])
        from torch.distributed.tensor import distribute_tensor
        for grads in later:
            for n, p in model2.named_parameters():
                p.grad = distribute_tensor(grads[n], p.device_mesh, p.placements, src_data_rank=None)
            opt2.step()
        for n, p in model2.named_parameters():
            f.expect(torch.equal(full(p.detach()), want[n]), f"dcp {kind}: reloaded parameter {n} differs")
            f.expect(torch.equal(full(opt2.state[p]["exp_avg"]), want_m[n]), f"dcp {kind}: reloaded momentum {n} differs")
        if rank == 0:
            torch.save({"grads": later, "want": want, "want_m": want_m}, os.path.join(out, f"dcp_{kind}_next.pt"))


def sc_fsdp_2d_tp(f, ctx):
    """FSDP2 over the 'dp' dimension of a (2, 2) mesh, tensor parallel over 'tp' (2-D placements,
    strided shards where both shard dimension 0)."""
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    for kind in ("lion", "tiger"):
        model, ref = _fresh(cls=TPNet)
        tp(model, mesh["tp"])
        from torch.distributed.fsdp import fully_shard
        for m in (model.emb_row, model.emb_col, model.up, model.down):
            fully_shard(m, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
        dp_rank = mesh.get_coordinate()[0]
        train_compare(f, f"fsdp+tp {kind}", kind, model, ref, steps=4,
                      batch=lambda step, rank: net_batch(step, dp_rank),
                      nan={2: ((3,), "up.weight")} if kind == "tiger" else None)


def sc_hsdp(f, ctx):
    """HSDP: fully_shard on a (replicate 2, shard 2) mesh: placements (Replicate(), Shard(0))."""
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("rep", "shard"))
    for kind in ("lion", "tiger"):
        model, ref = _fresh()
        fsdp(model, mesh=mesh)
        f.expect(str(tuple(model.lin1.weight.placements)) == "(Replicate(), Shard(dim=0))",
                 f"unexpected HSDP placements {model.lin1.weight.placements}")
        train_compare(f, f"hsdp {kind}", kind, model, ref, steps=3, batch=net_batch,
                      expect_bytes=net_bytes(4) if kind == "tiger" else None,
                      nan={1: ((1, 3), "lin1.weight")} if kind == "tiger" else None)


def sc_full_state_load(f, ctx):
    """load_state_dict between layouts: a one-process (full tensor) state into a sharded optimizer
    (each rank keeps its part) and a sharded state into a one-process optimizer (gathered); the
    next step then equals the one-process step bit for bit."""
    rank = dist.get_rank()
    for kind in ("lion", "tiger"):
        model, ref = _fresh(torch.bfloat16)
        fsdp(model)
        opt, ref_opt = make_opt(kind, model, precision="kahan"), make_opt(kind, ref, precision="kahan")
        for step in range(2):
            model(net_batch(step, rank)).backward()
            for p, rp in zip(model.parameters(), ref.parameters()):
                rp.grad = full(p.grad).clone()
            opt.step(), ref_opt.step()
            opt.zero_grad(), ref_opt.zero_grad()
        opt2 = make_opt(kind, model, precision="kahan")  # a fresh sharded optimizer
        opt2.load_state_dict(ref_opt.state_dict())         # full -> sharded
        f.expect(all(is_dtensor(opt2.state[p]["exp_avg"]) for p in model.parameters()),
                 f"full->sharded {kind}: the state is not sharded")
        compare(f, f"full->sharded {kind}", model, ref, opt2, ref_opt)
        model(net_batch(5, rank)).backward()
        for p, rp in zip(model.parameters(), ref.parameters()):
            rp.grad = full(p.grad).clone()
        opt2.step(), ref_opt.step()
        compare(f, f"full->sharded {kind}, next step", model, ref, opt2, ref_opt)
        ref2, _ = _fresh(torch.bfloat16)
        ref2_opt = make_opt(kind, ref2, precision="kahan")
        ref2_opt.load_state_dict(opt2.state_dict())  # sharded -> full: gathers
        for rp, q in zip(ref.parameters(), ref2.parameters()):
            f.expect(not is_dtensor(ref2_opt.state[q]["exp_avg"]) and
                     torch.equal(ref2_opt.state[q]["exp_avg"], ref_opt.state[rp]["exp_avg"]) and
                     torch.equal(ref2_opt.state[q]["kahan_comp"], ref_opt.state[rp]["kahan_comp"]),
                     f"sharded->full {kind}: state differs")


def sc_sharded_grad_scaler(f, ctx):
    """torch's ShardedGradScaler with scaler.unscale_(opt) before scaler.step(opt): an Inf in one
    rank's gradient shard skips the step on every rank (its unscale_ all-reduces found_inf); a
    finite step equals one process given the unscaled gradients."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    rank = dist.get_rank()
    for kind in ("lion", "tiger"):
        model, ref = _fresh()
        fsdp(model)
        opt, ref_opt = make_opt(kind, model), make_opt(kind, ref)
        scaler = ShardedGradScaler(device="cpu", init_scale=1024.0)
        for step in range(3):
            scaler.scale(model(net_batch(step, rank))).backward()
            if step == 1 and rank == 1:
                local(model.lin1.weight.grad).view(-1)[0] = float("inf")
            before = {n: full(p.detach()).clone() for n, p in model.named_parameters()}
            scaler.unscale_(opt)
            grads = [full(p.grad).clone() for p in model.parameters()]
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            if step == 1:
                f.expect(all(torch.equal(full(p.detach()), before[n]) for n, p in model.named_parameters()),
                         f"scaler {kind}: a step with an Inf on rank 1 was not skipped on rank {rank}")
                continue
            for rp, g in zip(ref.parameters(), grads):
                rp.grad = g
            ref_opt.step()
            ref_opt.zero_grad()
            compare(f, f"scaler {kind} step {step}", model, ref, opt, ref_opt, counters=False)


def sc_step_in_backward(f, ctx):
    """step_in_backward on FSDP2 and on tensor-parallel parameters (FSDP2 runs the sharded
    parameters' post-accumulate-grad hooks after its reduce-scatter) equals backward-then-step()
    bit for bit, for Lion and Tiger (one collective per parameter then)."""
    from torch.distributed.device_mesh import init_device_mesh
    from tigercore.optim.in_backward import step_in_backward
    rank = dist.get_rank()
    for kind in ("lion", "tiger"):
        for how in ("fsdp", "tp"):
            if how == "fsdp":
                a, _ = _fresh()
                b, _ = _fresh()
                fsdp(a), fsdp(b)
                batch = net_batch
            else:
                mesh = init_device_mesh("cpu", (dist.get_world_size(),))
                a, _ = _fresh(cls=TPNet)
                b, _ = _fresh(cls=TPNet)
                tp(a, mesh), tp(b, mesh)
                batch = tp_batch
            opt_a, opt_b = make_opt(kind, a), make_opt(kind, b)
            handle = step_in_backward(a, opt_a)
            for step in range(3):
                a(batch(step, rank)).backward()
                b(batch(step, rank)).backward()
                opt_b.step()
                opt_b.zero_grad()
            handle.remove()
            for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
                f.expect(torch.equal(full(p.detach()), full(q.detach())), f"{kind} {how}: {n} differs in backward")
                f.expect(torch.equal(full(opt_a.state[p]["exp_avg"]), full(opt_b.state[q]["exp_avg"])),
                         f"{kind} {how}: momentum of {n} differs in backward")


SCENARIOS = {
    "lion_fsdp": sc_lion_fsdp,
    **{f"lion_bf16_{m}": sc_lion_bf16(m) for m in ("none", "kahan", "stochastic", "master")},
    "tiger_fsdp": sc_tiger_fsdp,
    "tiger_guard_off": sc_tiger_guard_off,
    "tiger_accum": sc_tiger_accum,
    **{f"tiger_bf16_{m}": sc_tiger_bf16(m) for m in ("none", "kahan", "stochastic", "master")},
    "tp_lion": sc_tp("lion"),
    "tp_tiger": sc_tp("tiger"),
    "tp_tiger_bf16_kahan": sc_tp("tiger", torch.bfloat16, "kahan"),
    "tp_stochastic_refused": sc_tp_stochastic_refused,
    "mixed_refused": sc_mixed_refused,
    "whole_tensor_options_refused": sc_whole_tensor_options_refused,
    "ddp": sc_ddp,
    "dcp": sc_dcp,
    "step_in_backward": sc_step_in_backward,
    "full_state_load": sc_full_state_load,
    "sharded_grad_scaler": sc_sharded_grad_scaler,
    "fsdp_2d_tp": sc_fsdp_2d_tp,
    "hsdp": sc_hsdp,
}


def worker(rank, world, out, names):
    """Entry point of a spawned process: joins the gloo group, runs the scenarios, writes
    {scenario: [failure messages]} to out/rank<r>.json."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(out, "store"), rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    ctx = {"out": out}
    results = {}
    for name in names:
        f = Failures()
        try:
            SCENARIOS[name](f, ctx)
        except Exception:
            f.append(traceback.format_exc())
        results[name] = list(f)
        dist.barrier()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(results, fh)
    dist.destroy_process_group()
