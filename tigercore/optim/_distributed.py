"""Lion and Tiger on DTensor parameters (FSDP2 ``fully_shard``, tensor parallel, N-D meshes):
the step ops run on the local shards; Tiger's whole-tensor quantities (the RMS of a K tensor, of
each E row, and the non-finite guard) are made global with ONE all_reduce per step and mesh.
Semantics: docs/semantics.md, "Distributed"; reference: the same optimizer in one process on the
full tensors (tests/test_distributed.py). The optimizer classes call in through small hooks
(_base.py: local(), mesh_of(), check(), run_batches(), like_param(); tiger.py: local()).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import HALF_DTYPES, rms_rows

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
    from torch.distributed.tensor.placement_types import Shard
    try:
        from torch.distributed.tensor.placement_types import _StridedShard, _StridedShardOffsetMode
    except ImportError:  # older torch: no strided sharding
        _StridedShard = _StridedShardOffsetMode = None
except ImportError:  # torch built without torch.distributed
    DTensor = None


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)  # type(p) in PLAIN_TYPES: a plain tensor, cheaply


def local(t):
    """The local shard of a DTensor (the tensor itself, with its own version counter and storage),
    or t itself. [note: local tensors] Stamps, overlap checks and the ops see local tensors only."""
    if type(t) in PLAIN_TYPES:
        return t
    return t._local_tensor if DTensor is not None and isinstance(t, DTensor) else t


def mesh_of(p):
    """The device mesh of a DTensor parameter, None for a plain tensor. It separates parameters
    into different op calls (besides device and class)."""
    return p.device_mesh if DTensor is not None and isinstance(p, DTensor) else None


def check_plain_grad(opt, p, g) -> None:
    """A plain parameter with a DTensor gradient, refused where torch would only say 'mixed
    torch.Tensor and DTensor' (called when type(g) is not a plain tensor type)."""
    if is_dtensor(g) and not is_dtensor(p):
        raise RuntimeError(f"{type(opt).__name__}: a plain torch.Tensor parameter has a DTensor gradient; a "
                           "parameter and its gradient must both be DTensors with the same placements, or both "
                           "plain tensors")


# ---- where a local shard sits in the logical tensor -------------------------------------------------
@dataclass
class ShardLayout:
    """The local shard of one DTensor parameter on this rank, in the logical (global) tensor."""

    global_shape: tuple
    local_shape: tuple
    index: tuple        # per dim: int64 global positions of the local positions, or None (whole dim)
    sharded: bool       # split on some mesh dimension of size > 1 (else every rank holds all of it)
    rows_split: bool    # its last dimension is split: an E row is spread over ranks
    contributes: bool   # coordinate 0 on every mesh dimension where it is Replicate
    elem_offset: int | None  # flat offset of the first local element if the local elements are one
    #                          run of global offsets (stochastic rounding), else None

    def global_rows(self) -> torch.Tensor:
        """Global row (last-dimension slice) number of every local row, in local row order."""
        g, loc = self.global_shape, self.local_shape
        if len(g) <= 1:
            return torch.zeros(1, dtype=torch.int64)
        ids = torch.zeros(loc[:-1], dtype=torch.int64)
        stride = 1
        for d in reversed(range(len(g) - 1)):
            idx = self.index[d] if self.index[d] is not None else torch.arange(loc[d])
            shape = [1] * (len(g) - 1)
            shape[d] = loc[d]
            ids = ids + idx.view(shape) * stride
            stride *= g[d]
        return ids.reshape(-1)


def _shard_layout(p) -> ShardLayout:
    """Mirrors torch's compute_local_shape_and_global_offset, keeping every position (strided
    sharding has no single offset), and checks the result against the local tensor's shape."""
    mesh, placements, gshape = p.device_mesh, tuple(p.placements), tuple(p.shape)
    ndim = len(gshape)
    coord = mesh.get_coordinate()
    if coord is None:
        raise RuntimeError("tigercore: this rank is not part of a parameter's device mesh")
    index = [None] * ndim
    sizes = list(gshape)
    sharded = rows_split = False
    contributes = True
    for md, pl in enumerate(placements):
        n = mesh.size(md)
        if pl.is_replicate():
            contributes = contributes and coord[md] == 0
            continue
        if pl.is_partial():
            raise RuntimeError(f"tigercore: a parameter with placements {placements} has a Partial placement; "
                               "optimizers step parameters whose values are complete (Shard or Replicate)")
        if _StridedShard is not None and isinstance(pl, _StridedShard):
            d = pl.dim % ndim
            size, offs = pl._local_shard_size_and_offset(sizes[d], n, coord[md], _StridedShardOffsetMode.ALL)
            new = torch.tensor(list(offs)[:size] if size else [], dtype=torch.int64)
        elif isinstance(pl, Shard):
            d = pl.dim % ndim
            size, off = pl._local_shard_size_and_offset(sizes[d], n, coord[md])
            new = torch.arange(int(off), int(off) + int(size), dtype=torch.int64)
        else:
            raise RuntimeError(f"tigercore: unsupported placement {pl!r} (Shard(d) and Replicate are supported)")
        index[d] = new if index[d] is None else index[d][new]
        sizes[d] = int(size)
        if n > 1:
            sharded = True
            rows_split = rows_split or d == ndim - 1
    lshape = tuple(local(p).shape)
    if tuple(sizes) != lshape:
        raise RuntimeError(f"tigercore: cannot place the local shard {list(lshape)} of a parameter of shape "
                           f"{list(gshape)} with placements {placements} (expected {sizes})")
    return ShardLayout(gshape, lshape, tuple(index), sharded, rows_split, contributes, _elem_offset(gshape, lshape, index))


def _elem_offset(gshape, lshape, index):
    """Flat global offset of the first local element when the local elements are exactly the global
    offsets [offset, offset + numel) in order; None otherwise (e.g. a Shard(1) of a 2-D tensor)."""
    numel = math.prod(lshape)
    if numel == 0:
        return 0
    strides = [math.prod(gshape[d + 1:]) for d in range(len(gshape))]
    first = last = 0
    for d, idx in enumerate(index):
        if idx is None:
            lo, hi = 0, lshape[d] - 1
        else:
            lo, hi = int(idx[0]), int(idx[-1])
            if hi - lo + 1 != lshape[d] or not torch.equal(idx, torch.arange(lo, hi + 1)):
                return None  # strided positions
        first += lo * strides[d]
        last += hi * strides[d]
    return first if last - first + 1 == numel else None


def layout(opt, p) -> ShardLayout:
    """The ShardLayout of p, cached on the optimizer while p's mesh, placements and shapes stay."""
    cache = opt.__dict__.setdefault("_shard_layouts", {})
    key = (id(p.device_mesh), tuple(p.placements), tuple(p.shape), tuple(local(p).shape))
    hit = cache.get(id(p))
    if hit is None or hit[0] != key:
        hit = cache[id(p)] = (key, _shard_layout(p))
    return hit[1]


# ---- checks (before any kernel runs) ------------------------------------------------------------------
def check(opt, p, state, group) -> None:
    """A DTensor parameter's gradient and state must be DTensors with its mesh and placements, and
    its group must not ask for what a shard cannot compute alone."""
    name = type(opt).__name__
    if group.get("cautious", False):
        raise NotImplementedError(f"{name}: cautious=True is not supported for DTensor parameters (FSDP2/tensor "
                                  "parallel): its scale counts the whole tensor, which a shard does not see; use "
                                  "cautious=False there")
    g = p.grad
    if not is_dtensor(g):
        raise RuntimeError(f"{name}: a DTensor parameter (placements {tuple(p.placements)}) has a plain "
                           "torch.Tensor gradient; it must be a DTensor with the parameter's placements")
    if g.device_mesh != p.device_mesh:
        raise RuntimeError(f"{name}: a parameter's gradient lives on another device mesh ({g.device_mesh}) than the "
                           f"parameter ({p.device_mesh})")
    if tuple(g.placements) != tuple(p.placements):
        # [note: gradient placements] autograd may leave a gradient in another layout than its
        # parameter (tensor parallel: a Replicate gradient of a row-sharded embedding). It is
        # redistributed to the parameter's placements, as torch's optimizers do implicitly:
        # locally from Replicate, with a reduction from Partial. Values are unchanged.
        p.grad = g = g.redistribute(p.device_mesh, p.placements)
    for key in ("exp_avg", "master_param", "kahan_comp"):
        t = state.get(key)
        if t is not None and (not is_dtensor(t) or t.device_mesh != p.device_mesh
                              or tuple(t.placements) != tuple(p.placements)):
            raise RuntimeError(f"{name}: state '{key}' must be a DTensor with the parameter's placements "
                               f"{tuple(p.placements)}; load distributed state with "
                               "torch.distributed.checkpoint.state_dict.set_optimizer_state_dict")
    lay = layout(opt, p)
    if opt.precision == "stochastic" and p.dtype in HALF_DTYPES and lay.elem_offset is None:
        raise RuntimeError(f"{name}: precision='stochastic' needs the local elements of a {p.dtype} parameter to "
                           f"be one run of the tensor's flat offsets (the rounding stream is keyed by them); the "
                           f"shard {list(lay.local_shape)} of {list(lay.global_shape)} with placements "
                           f"{tuple(p.placements)} is not (shard dimension 0, or use precision='master'/'kahan')")


# ---- the step -------------------------------------------------------------------------------------------
def _common(opt, group, params, ids, device):
    """The op arguments of one batch, on local tensors (as _base._run_batch builds them)."""
    states = [opt.state[p] for p in params]
    lps = [local(p) for p in params]
    aux = []
    if opt.precision in ("kahan", "master") and any(p.dtype in HALF_DTYPES for p in params):
        for p, lp, st in zip(params, lps, states):
            key = opt._aux_key(p)
            aux.append(local(st[key]) if key else lp.new_empty(0))
    grad_scale, found_inf = opt._gradscaler_tensors(device)
    common = dict(params=lps, grads=[local(p.grad) for p in params], exp_avgs=[local(st["exp_avg"]) for st in states],
                  aux=aux, steps=[st["step"] for st in states], stamps=[st["param_stamp"] for st in states],
                  lr=opt._lr_tensor(group, device), param_ids=ids, maximize=bool(group.get("maximize", False)),
                  precision=opt.precision, seed=opt.seed, grad_scale=grad_scale, found_inf=found_inf,
                  compiled=torch.compiler.is_compiling(),
                  elem_offsets=[layout(opt, p).elem_offset or 0 for p in params])
    use_ref = opt.backend == "reference" or not all(
        t.is_contiguous() for t in common["params"] + common["grads"] + common["exp_avgs"] + aux)
    return states, common, use_ref


def run_batches(opt, batches) -> None:
    """Runs the batches (group, device, sub, use_ref, params, ids) of DTensor parameters of one
    step: Lion shard by shard; Tiger with one all_reduce per mesh for its global quantities."""
    if opt._op_name == "lion_step_":
        for group, device, sub, _, params, ids in batches:
            states, common, use_ref = _common(opt, group, params, ids, device)
            opt._call_op(opt._op(use_ref, device), group, sub, states, **common)
        return
    _tiger_step(opt, batches)


@dataclass
class _Packing:
    """Where one batch's local sums and flags go in its mesh's buffer. w*: this rank's contributions
    (positions in the batch's sums/flags -> slots); r*: the slots read back (every reduced entry)."""

    w_sel: torch.Tensor
    w_dst: torch.Tensor
    r_sel: torch.Tensor
    r_dst: torch.Tensor
    fw_sel: torch.Tensor
    fw_dst: torch.Tensor
    fr_sel: torch.Tensor
    fr_dst: torch.Tensor
    counts: torch.Tensor  # float64, per row of the batch: elements of the global tensor (K) or row (E)


def _long(xs):
    return torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64)


def _plan_packing(opt, batches):
    """[note: one collective] Per mesh, one float64 buffer: for every sharded K tensor one slot,
    for every E tensor whose rows are split across ranks one slot per global row, and (guard on) one
    flag slot per sharded tensor. A rank writes its local sums at their global positions and 0/1
    flags; along a mesh dimension where a tensor is Replicate only coordinate 0 writes. After one
    all_reduce(SUM) each slot holds the exact global sum of the partial sums (the zeros add
    exactly) and each flag the number of ranks that saw a non-finite gradient. Unsharded tensors
    and E tensors with whole local rows need nothing: their local values are the global ones. (A
    slot for them would only add zeros: for FSDP2's row-sharded GPT-2 embedding 50257 doubles,
    400 KB per step, against 1.5 KB for everything else.)"""
    sizes: dict = {}   # mesh -> slots so far (insertion order = order of first use, same on all ranks)
    packs = []
    for group, _, sub, _, params, _ in batches:
        mesh = params[0].device_mesh
        base = sizes.setdefault(mesh, 0)
        guard = bool(group["nonfinite_guard"])
        w_sel, w_dst, r_sel, r_dst, fw_sel, fw_dst, fr_sel, fr_dst, counts = ([] for _ in range(9))
        row0 = 0
        for i, p in enumerate(params):
            lay = layout(opt, p)
            lp = local(p)
            rows = rms_rows(lp, sub) if sub != "V" else 0
            if sub == "K" or (sub == "E" and p.dim() == 0):
                counts.append(torch.full((rows,), float(p.numel()), dtype=torch.float64))
                if lay.sharded:
                    sel, dst = torch.tensor([row0]), torch.tensor([base])
                    base += 1
                    r_sel.append(sel), r_dst.append(dst)
                    if lay.contributes:
                        w_sel.append(sel), w_dst.append(dst)
            elif sub == "E":
                counts.append(torch.full((rows,), float(p.shape[-1]), dtype=torch.float64))
                if lay.rows_split:
                    sel = torch.arange(row0, row0 + rows)
                    dst = base + lay.global_rows()
                    base += rms_rows(p, "E")
                    r_sel.append(sel), r_dst.append(dst)
                    if lay.contributes:
                        w_sel.append(sel), w_dst.append(dst)
            if guard and lay.sharded:
                sel, dst = torch.tensor([i]), torch.tensor([base])
                base += 1
                fr_sel.append(sel), fr_dst.append(dst)
                if lay.contributes:
                    fw_sel.append(sel), fw_dst.append(dst)
            row0 += rows
        sizes[mesh] = base
        packs.append(_Packing(_long(w_sel), _long(w_dst), _long(r_sel), _long(r_dst), _long(fw_sel), _long(fw_dst),
                              _long(fr_sel), _long(fr_dst),
                              torch.cat(counts) if counts else torch.zeros(0, dtype=torch.float64)))
    return sizes, packs


def _packing(opt, batches):
    key = tuple((sub, bool(group["nonfinite_guard"]), tuple(id(p) for p in params),
                 tuple((id(p.device_mesh), tuple(p.placements), tuple(p.shape), tuple(local(p).shape)) for p in params))
                for group, _, sub, _, params, _ in batches)
    cached = opt.__dict__.get("_dist_packing")
    if cached is None or cached[0] != key:
        cached = opt.__dict__["_dist_packing"] = (key, _plan_packing(opt, batches))
    return cached[1]


def _mesh_group(opt, mesh):
    """The process group spanning every rank of the mesh (cached per mesh)."""
    groups = opt.__dict__.setdefault("_dist_groups", {})
    if mesh not in groups:
        dist = torch.distributed
        if mesh.ndim == 1:
            groups[mesh] = mesh.get_group()
        elif mesh.size() == dist.get_world_size():
            groups[mesh] = dist.group.WORLD
        else:
            groups[mesh] = mesh._flatten().get_group()
    return groups[mesh]


def _step_sizes(lr, sums, counts, floor):
    """tigercore.reference.optim.tiger_eta for a vector of row counts: lr * max(sqrt(S / n), floor)
    in float64, bitwise what the kernels compute (tiger_eta_from_sumsq); 0 where n = 0."""
    alpha = lr.to(device=sums.device, dtype=torch.float64).reshape(())
    rms = torch.sqrt(sums / counts.clamp(min=1.0))
    eta = alpha * torch.clamp(rms, min=0.0 if floor is None else float(floor))
    return torch.where(counts > 0, eta, torch.zeros_like(eta))


def _tiger_step(opt, batches) -> None:
    """sync_external_writes_ -> tiger_stats -> one all_reduce per mesh -> tiger_step_ with the
    global step sizes and guard flags (docs/semantics.md, "Distributed")."""
    prepared = []
    for group, device, sub, _, params, ids in batches:
        states, common, use_ref = _common(opt, group, params, ids, device)
        sumsq = [st["sumsq"] for st in states] if sub != "V" else []
        sums = flags = None
        if sub != "V":
            opt._op(use_ref, device, "sync_external_writes_")(
                common["params"], common["aux"], common["stamps"], sumsq, precision=opt.precision,
                compiled=common["compiled"])
            common["compiled"] = False  # the versions are stamped now: see [note: external writes]
        if sub != "V" or group["nonfinite_guard"]:
            sums, flags = opt._op(use_ref, device, "tiger_stats")(
                common["params"], common["grads"], common["aux"], sumsq, tiger_class=sub, precision=opt.precision,
                grad_scale=common["grad_scale"])
        prepared.append((states, common, use_ref, sums, flags))

    sizes, packs = _packing(opt, batches)
    buffers = {mesh: None for mesh in sizes}
    for mesh, size in sizes.items():
        if size == 0:
            continue
        buf = None
        for (group, device, _, _, params, _), pack, (_, _, _, sums, flags) in zip(batches, packs, prepared):
            if params[0].device_mesh != mesh:
                continue
            if buf is None:
                buf = torch.zeros(size, dtype=torch.float64, device=device)
            if pack.w_dst.numel():
                buf.index_copy_(0, pack.w_dst.to(device), sums.index_select(0, pack.w_sel.to(device)))
            if pack.fw_dst.numel():
                buf.index_copy_(0, pack.fw_dst.to(device), flags.index_select(0, pack.fw_sel.to(device)).double())
        torch.distributed.all_reduce(buf, group=_mesh_group(opt, mesh))
        buffers[mesh] = buf

    record = opt.__dict__.get("_dist_record")
    for (group, device, sub, _, params, _), pack, (states, common, use_ref, sums, flags) in zip(batches, packs, prepared):
        buf = buffers[params[0].device_mesh]
        guard = bool(group["nonfinite_guard"])
        eta = None
        if sub != "V":
            if pack.r_dst.numel():
                sums = sums.index_copy(0, pack.r_sel.to(device), buf.index_select(0, pack.r_dst.to(device)))
            eta = _step_sizes(common["lr"], sums, pack.counts.to(device), group.get("rms_floor"))
        if guard and pack.fr_dst.numel():
            flags = flags.index_copy(0, pack.fr_sel.to(device), buf.index_select(0, pack.fr_dst.to(device)) > 0)
        if record is not None:
            record.append({"class": sub, "params": list(params), "sums": sums, "flags": flags})
        opt._call_op(opt._op(use_ref, device), group, sub, states, eta=eta, nonfinite=flags if guard else None,
                     **common)


# ---- state_dict ----------------------------------------------------------------------------------------
def like_param(t, p):
    """A loaded state tensor t in p's layout: a DTensor with p's mesh and placements for a DTensor
    parameter (redistributed, or split locally from a full tensor), a full tensor otherwise."""
    if is_dtensor(p):
        if is_dtensor(t):
            if t.device_mesh == p.device_mesh:
                return t if tuple(t.placements) == tuple(p.placements) else t.redistribute(p.device_mesh, p.placements)
            t = t.full_tensor()
        return distribute_tensor(t.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
    return t.full_tensor() if is_dtensor(t) else t
