"""`python -m tigercore`: info (text and JSON), demo (trains, writes the PNG), dpm-demo hand-off.

info and demo run in subprocesses as a user would run them, started together by one fixture
(each spends seconds importing torch); error paths run in-process with build_info or dpm stubbed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import tigercore
from tigercore.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def start_cli(*args, **env):
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "tigercore", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": pythonpath, **env})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (returncode, stdout, stderr)} of each CLI run, and "demo_dir": the demo's --out."""
    demo_dir = tmp_path_factory.mktemp("demo")
    procs = {
        "info": start_cli("info"),
        "json": start_cli("info", "--json", TIGERCORE_CPU_ISA="generic"),
        "demo": start_cli("demo", "--steps", "40", "--device", "cpu", "--out", str(demo_dir)),
    }
    results = {"demo_dir": demo_dir}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = (proc.returncode, out, err)
    return results


def stdout_of(runs, name):
    code, out, err = runs[name]
    assert code == 0, err
    return out


def test_info_text(runs):
    out = stdout_of(runs, "info")
    assert f"tigercore         {tigercore.__version__}" in out
    for field in ("torch ", "native extension", "CPU ISAs", "CUDA kernels", "CUDA devices"):
        assert field in out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[out.splitlines().index("") + 2:]}
    assert {"lion_step_", "tiger_step_"} <= set(table)
    assert all(kinds and set(kinds) <= {"native", "reference"} for kinds in table.values())


def test_info_json_honours_isa_override(runs):
    info = json.loads(stdout_of(runs, "json"))
    assert set(info) == {"tigercore_version", "torch_version", "torch_cuda_version", "native", "cpu", "cuda",
                         "ops"}
    assert set(info["native"]) == {"loaded", "error", "built_with_torch", "compiler"}
    assert set(info["cpu"]) == {"isas_compiled", "isas_supported", "isa_active", "isa_env"}
    assert set(info["cuda"]) == {"kernels_compiled", "archs", "built_with_cuda", "device_available", "devices"}
    assert list(info["ops"])[:2] == ["lion_step_", "tiger_step_"]
    assert all(set(per_dev) == {"cpu", "cuda"} for per_dev in info["ops"].values())
    assert info["cpu"]["isa_env"] == "generic"
    if info["native"]["loaded"]:
        assert info["native"]["error"] is None
        assert info["cpu"]["isa_active"] == "generic"
        assert info["ops"]["lion_step_"]["cpu"] and info["ops"]["tiger_step_"]["cpu"]


def test_info_reports_load_error(monkeypatch, capsys):
    broken = {"native_loaded": False, "native_error": "failed to load: boom"}
    monkeypatch.setattr(tigercore, "build_info", lambda: broken)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "NOT loaded: failed to load: boom" in out
    assert "unknown (extension not loaded)" in out


def test_demo_trains_and_plots(runs):
    pytest.importorskip("matplotlib")
    out = stdout_of(runs, "demo")
    png = runs["demo_dir"] / "loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"loss curves: {png}" in out
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out.splitlines()
            if line.split()[:1] in (["tiger"], ["lion"], ["adamw"])}
    assert set(rows) == {"tiger", "lion", "adamw"}
    for name, (initial, final, ms, state_bytes, per_param) in rows.items():
        assert final < initial - 0.05, (name, initial, final)
        assert ms > 0 and state_bytes > 0
        # README "Memory": one fp32 state slot for Lion/Tiger (plus 0-d step counters), two for AdamW
        assert (8.0 if name == "adamw" else 4.0) <= per_param < (8.1 if name == "adamw" else 4.1)


def test_dpm_demo_passes_arguments_through(monkeypatch):
    seen = []
    fake_demo = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setitem(sys.modules, "tigercore.dpm", types.SimpleNamespace(demo=fake_demo))
    assert main(["dpm-demo", "--steps", "3", "--help", "extra"]) == 0
    assert seen == [["--steps", "3", "--help", "extra"]]


def test_dpm_demo_missing_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tigercore.dpm", None)
    assert main(["dpm-demo"]) == 2
    assert "cannot import tigercore.dpm.demo" in capsys.readouterr().err
