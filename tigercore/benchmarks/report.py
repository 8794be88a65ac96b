"""Running a benchmark suite and reporting it: a text table, JSON and a PNG bar chart."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from .. import build_info


def header(device: str) -> dict:
    info = build_info()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpu_isa": info.get("cpu_isa_active"), "cuda_archs": info.get("cuda_archs"),
            "native": info.get("native_loaded")}


def add_ratios(rows: list[dict], ceiling_gbps: float) -> None:
    """% of the in-place axpy ceiling, and how much faster tigercore Lion is than each row."""
    ours = next((r for r in rows if r["name"] == "tigercore Lion" and "ms" in r), None)
    for r in rows:
        if "ms" not in r:
            continue
        r["pct_ceiling"] = 100.0 * r["gbps"] / ceiling_gbps
        if ours is not None:
            r["tigercore_speedup"] = r["ms"] / ours["ms"]


def format_table(title: str, rows: list[dict]) -> str:
    lines = [title, f"{'candidate':30s} {'ms/step':>9s} {'GB/s':>7s} {'% axpy':>7s} {'tc Lion x':>9s} {'extra MB':>9s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:30s} {'n/a':>9s}  ({r['error'][:70]})")
            continue
        lines.append(f"{r['name']:30s} {r['ms']:9.2f} {r['gbps']:7.1f} {r.get('pct_ceiling', 0):6.0f}% "
                     f"{r.get('tigercore_speedup', float('nan')):8.2f}x {r['transient_bytes'] / 2**20:9.2f}")
    return "\n".join(lines)


def write_outputs(out_dir: Path, result: dict) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(result, indent=2))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return json_path, None
    groups = [g for g in result["optim"] if any("gbps" in r for r in g["rows"])]
    if not groups:
        return json_path, None
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.6 * len(groups) + 0.6), squeeze=False)
    for ax, g in zip(axes[:, 0], groups):
        ceil = g.get("ceilings", result["ceilings"])["axpy"]
        rows = [r for r in g["rows"] if "gbps" in r]
        names = [r["name"] for r in rows]
        colors = ["tab:orange" if r["name"].startswith("tigercore") else "tab:gray" for r in rows]
        ax.barh(names, [r["gbps"] for r in rows], color=colors)
        ax.axvline(ceil, color="tab:red", linestyle="--", label=f"in-place axpy ceiling {ceil:.0f} GB/s")
        ax.set_title(g["title"], fontsize=9)
        ax.set_xlabel("effective GB/s (bytes a step must move / time)")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = out_dir / "bench.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return json_path, png
