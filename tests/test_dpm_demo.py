# Smoke test of the Analytic-DPM demo (tigercore/dpm/demo.py): a tiny configuration runs end to end,
# prints the variance table, trajectories and NELBOs, and writes the PNG.
import torch

from tigercore.dpm.demo import main


def test_demo_runs_and_writes_png(tmp_path, capsys):
    threads = torch.get_num_threads()
    rc = main(["--dim", "4", "--mc", "8", "--samples", "40", "--timesteps", "100", "--steps", "4",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0 and torch.get_num_threads() == threads          # thread count restored
    out = capsys.readouterr().out
    for needle in ("δ_n = 1 − Γ_n", "optimal:", "NELBO in bits/dim", "analytic", "beta_tilde"):
        assert needle in out
    png = tmp_path / "analytic_dpm_demo.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_demo_runs_end_to_end_and_caches(tmp_path, capsys):
    """--data digits on a tiny configuration: trains (Tiger), caches, estimates δ, prints the NELBO
    table (bits/dim ± SE) for every K ≤ N, writes both PNGs; a second run loads the cached model."""
    import pytest
    pytest.importorskip("sklearn")
    args = ["--data", "digits", "--timesteps", "30", "--train-steps", "40", "--hidden", "32", "--mc", "64",
            "--test-points", "24", "--sample-steps", "5", "--out", str(tmp_path), "--cache", str(tmp_path / "cache"),
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for needle in ("trained with Tiger", "NELBO in bits/dim", "K = 10", "K = 25", "β̃ (even)", "analytic (optimal)"):
        assert needle in out
    assert "K = 100" not in out                         # K > N is skipped
    for png in ("digits_samples.png", "digits_nelbo.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("digits_eps_mlp_*.pt"))) == 1
    assert main(args + ["--no-plot"]) == 0
    assert "loaded from the cache" in capsys.readouterr().out


def test_toy_alias_still_runs(tmp_path, capsys):
    assert main(["--data", "toy", "--dim", "2", "--mc", "4", "--samples", "10", "--timesteps", "20", "--steps", "3",
                 "--no-plot", "--no-progress"]) == 0
    assert "levels data" in capsys.readouterr().out
