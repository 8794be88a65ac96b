"""Reads tools/build_flags.json, the one source of tigercore's compiler flags, include directories
and source lists, for setup.py (and tests/test_build_flags.py). CMakeLists.txt reads the same
file with string(JSON) and applies the same rules (see "about" in the JSON): an entry's flags
apply when every condition in its "when" holds; {name} placeholders take the given values.
Sources are found by directory, so files added or moved under csrc/ need no build edits.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONDITIONS = {"release", "debug", "extension", "cuda", "werror", "ptxas_verbose", "nvcc_threads", "sanitize"}


def load(path: str = os.path.join(HERE, "build_flags.json")) -> dict:
    with open(path) as f:
        return json.load(f)


def flags(spec: dict, section: str, conditions: set, values: dict | None = None) -> list:
    """The flags of `section` ("cxx", "nvcc", "link", "torch_cxx", "torch_nvcc") under `conditions`,
    a set of condition names that hold (release or debug must be one of them)."""
    unknown = set(conditions) - CONDITIONS
    if unknown or len({"release", "debug"} & set(conditions)) != 1:
        raise ValueError(f"build_flags: bad conditions {sorted(conditions)} (known: {sorted(CONDITIONS)}; "
                         "exactly one of release/debug)")
    values = values or {}
    out = []
    for entry in spec[section]:
        when = entry.get("when", [])
        for name in when:
            if name.lstrip("!") not in CONDITIONS:
                raise ValueError(f"build_flags.json: unknown condition {name!r} in {section}")
        if all((name[1:] not in conditions) if name.startswith("!") else (name in conditions) for name in when):
            out += [f.format(**values) for f in entry["flags"]]
    return out


def sources(spec: dict, root: str = ROOT, cuda: bool = False) -> list:
    """Every source under csrc/ (any depth, outside exclude_dirs), relative to root, sorted: the
    .cpp files, plus (with cuda) the .cu files and whatever lies in cuda_only_dirs."""
    src = spec["sources"]
    excluded = [os.path.normpath(d) + os.sep for d in src["exclude_dirs"]]
    cuda_only = [os.path.normpath(d) + os.sep for d in src["cuda_only_dirs"]]
    found = []
    for ext in (src["cxx"], src["cuda"]):
        for path in glob.glob(os.path.join(root, src["root"], "**", "*" + ext), recursive=True):
            rel = os.path.relpath(path, root)
            if any(rel.startswith(d) for d in excluded):
                continue
            if not cuda and (ext == src["cuda"] or any(rel.startswith(d) for d in cuda_only)):
                continue
            found.append(rel)
    return sorted(found)


def include_dirs(spec: dict, root: str = ROOT) -> list:
    return [os.path.join(root, d) for d in spec["include_dirs"]]


def nvidia_include_dirs(spec: dict) -> list:
    """The pip-installed CUDA headers, <site-packages>/nvidia/<nvidia_include_glob>."""
    dirs = []
    found = importlib.util.find_spec("nvidia")
    for base in (found.submodule_search_locations or []) if found else []:
        dirs += sorted(glob.glob(os.path.join(base, spec["nvidia_include_glob"])))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
