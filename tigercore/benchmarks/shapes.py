"""Parameter shape lists: GPT-2 small (124M), a ~1B-parameter GPT-style model, flat tensors."""
from __future__ import annotations


def gpt2_small(vocab: int = 50257, d: int = 768, layers: int = 12, ctx: int = 1024) -> list[tuple[str, tuple[int, ...]]]:
    """GPT-2's parameter shapes; the defaults are GPT-2 small's (124M)."""
    shapes = [("wte", (vocab, d)), ("wpe", (ctx, d))]
    for i in range(layers):
        shapes += [(f"h{i}.ln_1.weight", (d,)), (f"h{i}.ln_1.bias", (d,)),
                   (f"h{i}.attn.c_attn.weight", (d, 3 * d)), (f"h{i}.attn.c_attn.bias", (3 * d,)),
                   (f"h{i}.attn.c_proj.weight", (d, d)), (f"h{i}.attn.c_proj.bias", (d,)),
                   (f"h{i}.ln_2.weight", (d,)), (f"h{i}.ln_2.bias", (d,)),
                   (f"h{i}.mlp.c_fc.weight", (d, 4 * d)), (f"h{i}.mlp.c_fc.bias", (4 * d,)),
                   (f"h{i}.mlp.c_proj.weight", (4 * d, d)), (f"h{i}.mlp.c_proj.bias", (d,))]
    return shapes + [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]


def gpt_1b() -> list[tuple[str, tuple[int, ...]]]:
    d, vocab, ctx, layers = 2048, 50257, 2048, 18
    shapes = [("wte", (vocab, d)), ("wpe", (ctx, d))]
    for i in range(layers):
        shapes += [(f"h{i}.ln_1.weight", (d,)), (f"h{i}.attn.qkv.weight", (d, 3 * d)),
                   (f"h{i}.attn.proj.weight", (d, d)), (f"h{i}.ln_2.weight", (d,)),
                   (f"h{i}.mlp.fc.weight", (d, 4 * d)), (f"h{i}.mlp.proj.weight", (4 * d, d))]
    return shapes + [("ln_f.weight", (d,))]


def flat(numel: int) -> list[tuple[str, tuple[int, ...]]]:
    return [("flat", (numel,))]


SHAPE_SETS = {"gpt2-small": gpt2_small, "gpt-1b": gpt_1b}


def numel_of(shapes) -> int:
    total = 0
    for _, s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return total


def from_spec(spec: str) -> list[tuple[str, tuple[int, ...]]]:
    """The shapes a benchmark's --shapes entry names: "gpt2-small" or "flat:<numel>"."""
    if spec == "gpt2-small":
        return gpt2_small()
    if spec.startswith("flat:"):
        return flat(int(spec.split(":", 1)[1]))
    raise ValueError(f"unknown shapes {spec!r}: 'gpt2-small' or 'flat:<numel>'")


def configurations(shapes_arg: str, dtypes_arg: str, threads_arg: str):
    """(spec, shapes, dtype name, threads) for every comma-separated entry of a benchmark's
    --shapes, --dtypes and --threads, with torch's thread count set for each (and restored after)."""
    import torch

    default_threads = torch.get_num_threads()
    try:
        for spec in shapes_arg.split(","):
            shapes = from_spec(spec)
            for dname in dtypes_arg.split(","):
                for nt in (int(t) for t in threads_arg.split(",")):
                    torch.set_num_threads(nt)
                    yield spec, shapes, dname, nt
    finally:
        torch.set_num_threads(default_threads)
