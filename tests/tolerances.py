"""Per-dtype tolerances against float64 oracles (the values bitsandbytes tests with).

Native kernels and the reference compute the same function, so those two are compared bitwise;
these tolerances apply only against a float64 oracle."""
import torch

TOL = {
    torch.float32: dict(atol=1e-6, rtol=1e-5),
    torch.float16: dict(atol=1e-4, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-3, rtol=1e-2),
    torch.float64: dict(atol=1e-12, rtol=1e-12),
}


def assert_close_to_oracle(actual: torch.Tensor, oracle: torch.Tensor, dtype=None):
    dtype = dtype or actual.dtype
    torch.testing.assert_close(actual.double(), oracle.double(), **TOL[dtype], equal_nan=True)


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, msg=""):
    """Equal values with NaN == NaN (and +0 == -0: sign(0) gives 0 either way)."""
    assert a.dtype == b.dtype and a.shape == b.shape, msg
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    if not bool(same.all()):
        idx = (~same).nonzero()[:5].tolist()
        raise AssertionError(f"{msg}: {int((~same).sum())} elements differ, first at {idx}: "
                             f"{a.flatten()[:0]} {[(a[tuple(i)].item(), b[tuple(i)].item()) for i in idx]}")
