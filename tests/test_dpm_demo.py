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
