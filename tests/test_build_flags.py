"""setup.py and CMakeLists.txt compile tigercore with the same flags (both read tools/build_flags.json).

Neither build compiles anything here: setup.py runs with a stand-in `ninja` (torch's BuildExtension
writes build.ninja, then "runs" it), CMake as a configure-only run (compile_commands.json), both on
a copy of the sources that has extra files in a new folder. Per source, the effective flags, the
include search order, the compilers and the source lists must agree; the few differences inherent
to the two tools are listed below with their reasons, anything else fails. Expected values that do
not come from the builds: the default arch list's -gencode flags and where the new files belong.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Only in setup.py's compile commands: CPython's CFLAGS (sysconfig), which setuptools puts first.
SETUP_ONLY = {
    "-g": "debug info only (CPython's CFLAGS); no effect on the generated code",
    "-Wsign-compare": "CPython's CFLAGS; -Wall turns it on for C++ anyway",
}
# Only in CMake's: the export macro CMake defines for a shared library, and the definitions of
# torch's CMake package; they switch declarations in torch's distributed/RPC headers, which
# tigercore does not include.
CMAKE_ONLY = re.compile(r"-D_C_EXPORTS|-DUSE_(C10D_GLOO|C10D_NCCL|DISTRIBUTED|NVSHMEM|RPC|TENSORPIPE)")
# "8.0;9.0+PTX": sm_80 and sm_90 code, plus compute_90 PTX.
DEFAULT_GENCODE = {"-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
                   "-gencode=arch=compute_90,code=compute_90"}
# Flags of which only the last one counts, by the name they are compared under.
LAST_WINS = [(re.compile(r"-O([0-3sgz]|fast)?$"), "-O"), (re.compile(r"-std="), "-std"),
             (re.compile(r"-ffp-contract="), "-ffp-contract"), (re.compile(r"-f(no-)?wrapv$"), "wrapv"),
             (re.compile(r"-Xptxas=-O"), "-Xptxas=-O")]
KNOBS = ("DEBUG", "NVCC_THREADS", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS")

CMAKE = shutil.which("cmake")
NVCC_FOUND = torch.version.cuda is not None and (
    shutil.which("nvcc") is not None or bool(os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")))
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake is not installed (CI has it)")


# ---- the two builds' compile commands ------------------------------------------------------------
def make_tree(dest):
    """A copy of what the builds read, with files that no build lists by name: a new folder with a
    .cpp and a .cu, a .cpp in the CUDA-only folder and a new C++ unit test."""
    os.makedirs(dest)
    for name in ("setup.py", "CMakeLists.txt"):
        shutil.copy(os.path.join(ROOT, name), dest)
    shutil.copytree(os.path.join(ROOT, "tools"), os.path.join(dest, "tools"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "csrc"), os.path.join(dest, "csrc"),
                    ignore=shutil.ignore_patterns("generated"))
    extra = {"csrc/newdir/helper.cpp": "int tigercore_probe_cpp() { return 1; }\n",
             "csrc/newdir/helper_kernels.cu": "int tigercore_probe_cu() { return 2; }\n",
             "csrc/cuda/host_side.cpp": "int tigercore_probe_cuda_host() { return 3; }\n",
             "csrc/tests/test_probe.cpp": "int main() { return 0; }\n"}
    for rel, text in extra.items():
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        with open(os.path.join(dest, rel), "w") as f:
            f.write(text)
    return str(dest)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIGERCORE_") and k not in KNOBS}
    env.update(extra)
    return env


def start_setup_py(src, tmp, env):
    """Starts setup.py's build_ext with a stand-in `ninja` on PATH: torch's BuildExtension writes
    build.ninja and nothing is compiled (the link step that follows fails, as expected)."""
    tmp = os.path.abspath(tmp)  # PATH must name the stand-in absolutely, or the real ninja builds
    fake = os.path.join(tmp, "fakebin")
    os.makedirs(fake, exist_ok=True)
    with open(os.path.join(fake, "ninja"), "w") as f:
        f.write('#!/bin/sh\n[ "$1" = "--version" ] && echo 1.11.1\nexit 0\n')
    os.chmod(os.path.join(fake, "ninja"), 0o755)
    temp = os.path.join(tmp, "setup-temp")
    env = dict(env, PATH=fake + os.pathsep + env.get("PATH", ""))
    proc = subprocess.Popen([sys.executable, "setup.py", "build_ext", "--build-temp", temp,
                             "--build-lib", os.path.join(tmp, "setup-lib")],
                            cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, os.path.join(temp, "build.ninja")


def setup_py_commands(started):
    """{source: argv} from the build.ninja that setup.py wrote."""
    proc, ninja_file = started
    out, _ = proc.communicate(timeout=300)
    assert os.path.exists(ninja_file), f"setup.py wrote no build.ninja:\n{out[-4000:]}"
    var, commands = {}, {}
    for line in open(ninja_file).read().splitlines():
        m = re.match(r"(\w+) = (.*)$", line)
        if m:
            var[m.group(1)] = m.group(2)
        m = re.match(r"build (\S+): (compile|cuda_compile) (\S+)$", line)
        if m:
            if m.group(2) == "compile":
                argv = shlex.split(var["cxx"]) + shlex.split(var["cflags"]) + ["-c", m.group(3)] + shlex.split(var["post_cflags"])
            else:
                argv = shlex.split(var["nvcc"]) + shlex.split(var["cuda_cflags"]) + ["-c", m.group(3)] + shlex.split(var["cuda_post_cflags"])
            commands[os.path.realpath(m.group(3))] = argv
    return commands


def cmake_commands(src, build, env, *args):
    """{source: (target, argv)} from a configure-only CMake run."""
    build = os.path.abspath(build)
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    run = subprocess.run([CMAKE, "-S", src, "-B", build, *gen, "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                          f"-DPython_EXECUTABLE={sys.executable}", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"cmake configure failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    commands = {}
    for entry in json.load(open(os.path.join(build, "compile_commands.json"))):
        argv = shlex.split(entry["command"])
        out = argv[argv.index("-o") + 1]
        target = re.search(r"CMakeFiles/([^/]+)\.dir/", out).group(1)
        commands[os.path.realpath(os.path.join(entry["directory"], entry["file"]))] = (target, argv)
    return commands


# ---- comparing commands --------------------------------------------------------------------------
def parse(argv, source):
    """(flags, include search order) of one compile command; -Xcompiler options one by one."""
    flags, normal, system = [], [], []
    it = iter(argv[1:])
    for a in it:
        if a in ("-o", "-MF", "-x"):
            next(it)
        elif a in ("-c", "-MMD", "-MD", "-forward-unknown-to-host-compiler") or os.path.realpath(a) == source:
            pass
        elif a.startswith("-I"):
            normal.append(a[2:] or next(it))
        elif a == "-isystem" or a.startswith("-isystem="):
            system.append(a[len("-isystem="):] if "=" in a else next(it))
        elif a in ("--compiler-options", "-Xcompiler") or a.startswith("-Xcompiler="):
            value = a[len("-Xcompiler="):] if a.startswith("-Xcompiler=") else next(it)
            flags += ["-Xcompiler=" + x.strip("'\"") for x in value.split(",")]
        elif a == "-gencode":
            flags.append("-gencode=" + next(it))
        else:
            flags.append(a)
    # -I directories are searched first, then -isystem ones (a directory named twice: the first).
    order = []
    for d in normal + system:
        d = os.path.realpath(d)
        if d not in order:
            order.append(d)
    return flags, order


def effective(flags):
    """{name: value}: the last of each LAST_WINS family, every other flag by itself."""
    out = {}
    for f in flags:
        name = next((n for rx, n in LAST_WINS if rx.match(f)), f)
        out[name] = f
    return out


def flag_differences(setup_flags, cmake_flags, debug):
    a, b = effective(setup_flags), effective(cmake_flags)
    only_setup = {v for k, v in a.items() if b.get(k) != v}
    only_cmake = {v for k, v in b.items() if a.get(k) != v}
    only_setup -= {f for f in SETUP_ONLY if not (debug and f == "-g")}
    only_cmake = {f for f in only_cmake if not CMAKE_ONLY.fullmatch(f)}
    return sorted(only_setup), sorted(only_cmake)


def include_differences(setup_order, cmake_order, src, cuda):
    """Differences in the include search order: the project's directories (the generated header's
    directory, then build_flags.json's include_dirs) lead in both, in the same order; the rest
    (python, torch, CUDA toolkit, pip's nvidia headers) is the same set, with the pip headers after
    the toolkit's."""
    def project(order):
        return ["<generated>" if d.endswith("tigercore_generated") else os.path.relpath(d, src)
                for d in order if d.startswith(src + os.sep) or d.endswith("tigercore_generated")]
    problems = []
    if project(setup_order) != project(cmake_order):
        problems.append(f"project include dirs: setup.py {project(setup_order)} vs CMake {project(cmake_order)}")
    for name, order in (("setup.py", setup_order), ("CMake", cmake_order)):
        if order[:len(project(order))] != [d for d in order if d.startswith(src + os.sep) or d.endswith("tigercore_generated")]:
            problems.append(f"{name}: the project's include dirs are not searched first: {order}")
    venv_include = os.path.realpath(os.path.join(sys.prefix, "include"))  # setuptools adds it
    rest_setup = {d for d in setup_order if not (d.startswith(src + os.sep) or d.endswith("tigercore_generated"))} - {venv_include}
    rest_cmake = {d for d in cmake_order if not (d.startswith(src + os.sep) or d.endswith("tigercore_generated"))}
    if not cuda:
        # torch's CMake package adds the toolkit's include dir whenever torch has CUDA; the CPU
        # sources include no CUDA header.
        rest_cmake = {d for d in rest_cmake if not re.search(r"cuda[^/]*/include$", d)}
    if rest_setup != rest_cmake:
        problems.append(f"external include dirs only in setup.py: {sorted(rest_setup - rest_cmake)}, "
                        f"only in CMake: {sorted(rest_cmake - rest_setup)}")
    for name, order in (("setup.py", setup_order), ("CMake", cmake_order)):
        toolkit = [i for i, d in enumerate(order) if re.search(r"cuda[^/]*/include$", d) and "site-packages" not in d]
        nvidia = [i for i, d in enumerate(order) if f"{os.sep}nvidia{os.sep}" in d]
        if cuda and toolkit and nvidia and min(nvidia) < max(toolkit):
            problems.append(f"{name}: pip's nvidia headers come before the toolkit's: {order}")
    return problems


def compare(src, setup_cmds, cmake_cmds, debug, cuda):
    ext = {s: argv for s, (target, argv) in cmake_cmds.items() if target == "_C"}
    problems = []
    if sorted(setup_cmds) != sorted(ext):
        problems.append(f"sources only in setup.py: {sorted(set(setup_cmds) - set(ext))}, "
                        f"only in CMake: {sorted(set(ext) - set(setup_cmds))}")
    for source in sorted(set(setup_cmds) & set(ext)):
        a, b = setup_cmds[source], ext[source]
        if os.path.realpath(shutil.which(a[0]) or a[0]) != os.path.realpath(b[0]):
            problems.append(f"{source}: compiler {a[0]} vs {b[0]}")
        fa, ia = parse(a, source)
        fb, ib = parse(b, source)
        only_setup, only_cmake = flag_differences(fa, fb, debug)
        if only_setup or only_cmake:
            problems.append(f"{os.path.relpath(source, src)}: flags only in setup.py {only_setup}, only in CMake {only_cmake}")
        problems += [f"{os.path.relpath(source, src)}: {p}" for p in include_differences(ia, ib, src, cuda)]
    return problems


# ---- the tests -----------------------------------------------------------------------------------
CONFIGS = {
    # name: (setup.py environment, CMake environment, CMake arguments, debug, cuda)
    "release": ({}, {}, [], False, NVCC_FOUND),
    "debug-werror": (dict(DEBUG="1", TIGERCORE_WERROR="1", NVCC_THREADS="2", TIGERCORE_PTXAS_VERBOSE="1"),
                     dict(TIGERCORE_WERROR="1", NVCC_THREADS="2", TIGERCORE_PTXAS_VERBOSE="1"),
                     ["-DCMAKE_BUILD_TYPE=Debug"], True, NVCC_FOUND),
    "cpu-only": (dict(TIGERCORE_SKIP_CUDA="1"), {}, ["-DTIGERCORE_WITH_CUDA=OFF"], False, False),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The compile commands of both builds per configuration, computed once per configuration."""
    cache = {}

    def get(name):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(f"flags-{name}")
            src = os.path.realpath(make_tree(tmp / "src"))
            setup_env, cmake_env, cmake_args, debug, cuda = CONFIGS[name]
            started = start_setup_py(src, str(tmp), clean_env(**setup_env))  # runs beside CMake
            cmake_cmds = cmake_commands(src, str(tmp / "cmake"), clean_env(**cmake_env), *cmake_args)
            setup_cmds = setup_py_commands(started)
            cache[name] = (src, setup_cmds, cmake_cmds, debug, cuda)
        return cache[name]
    return get


@needs_cmake
@pytest.mark.parametrize("config", ["release", pytest.param("debug-werror", marks=pytest.mark.slow),
                                    pytest.param("cpu-only", marks=pytest.mark.slow)])
def test_setup_py_and_cmake_compile_alike(builds, config):
    src, setup_cmds, cmake_cmds, debug, cuda = builds(config)
    problems = compare(src, setup_cmds, cmake_cmds, debug, cuda)
    assert not problems, "setup.py and CMakeLists.txt disagree:\n  " + "\n  ".join(problems)


@needs_cmake
def test_sources_found_by_directory(builds):
    """Files in a new folder and a new unit test are built without any build edit; CUDA sources
    (.cu, and anything in csrc/cuda) only with CUDA; csrc/tests never goes into _C."""
    src, setup_cmds, cmake_cmds, _, cuda = builds("release")
    ext = {os.path.relpath(s, src) for s, (t, _) in cmake_cmds.items() if t == "_C"}
    listed = {os.path.relpath(s, src) for s in setup_cmds}
    expected = {os.path.relpath(os.path.join(d, f), src)
                for d, _, files in os.walk(os.path.join(src, "csrc")) for f in files
                if f.endswith(".cpp") and "tests" not in os.path.relpath(d, src).split(os.sep)
                and (cuda or not os.path.relpath(d, src).startswith(os.path.join("csrc", "cuda")))}
    if cuda:
        expected |= {os.path.relpath(os.path.join(d, f), src)
                     for d, _, files in os.walk(os.path.join(src, "csrc")) for f in files if f.endswith(".cu")}
    assert listed == expected and ext == expected, (sorted(listed ^ expected), sorted(ext ^ expected))
    assert "csrc/newdir/helper.cpp" in listed
    assert ("csrc/newdir/helper_kernels.cu" in listed) == cuda and ("csrc/cuda/host_side.cpp" in listed) == cuda
    tests = {t for t, _ in cmake_cmds.values() if t != "_C"}
    assert tests == {"test_math", "test_mta", "test_probe"}, tests


@needs_cmake
def test_cuda_arch_flags(builds):
    """Both builds take the default TORCH_CUDA_ARCH_LIST from build_flags.json ("8.0;9.0+PTX")."""
    if not NVCC_FOUND:
        pytest.skip("no CUDA toolkit (nvcc) or torch without CUDA: no CUDA sources are compiled")
    src, setup_cmds, cmake_cmds, _, _ = builds("release")
    for source in [s for s in setup_cmds if s.endswith(".cu")]:
        for argv in (setup_cmds[source], cmake_cmds[source][1]):
            flags, _ = parse(argv, source)
            assert {f for f in flags if f.startswith("-gencode")} == DEFAULT_GENCODE, argv
            assert "--fmad=false" in flags and "-Xcompiler=-ffp-contract=off" in flags, argv


@needs_cmake
def test_unit_tests_compile_like_the_extension(builds):
    """csrc/tests is compiled with the extension's code-generation flags (less what only a torch
    module needs), plus its build_flags.json override (-O1 for test_mta)."""
    src, _, cmake_cmds, _, _ = builds("release")
    by_target = {t: (s, argv) for s, (t, argv) in cmake_cmds.items()}
    ext_source, ext_argv = next((s, argv) for s, (t, argv) in cmake_cmds.items()
                                if t == "_C" and s.endswith(".cpp"))
    module_only = {"-fopenmp", "-fPIC", "-DTIGERCORE_WITH_CUDA", "-DTORCH_API_INCLUDE_EXTENSION_H",
                   "-DTORCH_EXTENSION_NAME=_C"}
    ext = {k: v for k, v in effective(parse(ext_argv, ext_source)[0]).items()
           if v not in module_only and not CMAKE_ONLY.fullmatch(v)}
    for name, override in (("test_math", {}), ("test_mta", {"-O": "-O1"})):
        source, argv = by_target[name]
        assert effective(parse(argv, source)[0]) == dict(ext, **override), (name, argv)
        for must in ("-ffp-contract=off", "-std=c++20", "-fwrapv", "-Wextra"):
            assert must in argv, (name, must, argv)


@needs_cmake
def test_sanitized_unit_tests(tmp_path):
    """-DTIGERCORE_SANITIZE=address,undefined: the tests compile and link with the sanitizers,
    abort on the first report and see signed overflow as an error (no -fwrapv)."""
    src = os.path.realpath(make_tree(tmp_path / "src"))
    build = str(tmp_path / "build")
    cmds = cmake_commands(src, build, clean_env(), "-DTIGERCORE_BUILD_EXTENSION=OFF",
                          "-DTIGERCORE_SANITIZE=address,undefined")
    for source, (target, argv) in cmds.items():
        flags = effective(parse(argv, source)[0])
        assert flags.get("-fsanitize=address,undefined") and flags.get("-fno-sanitize-recover=all"), argv
        assert flags.get("wrapv") in (None, "-fno-wrapv"), argv
    ninja = os.path.join(build, "build.ninja")
    if os.path.exists(ninja):
        link = re.findall(r"LINK_FLAGS = (.*)", open(ninja).read())
        assert link and all("-fsanitize=address,undefined" in flags for flags in link), link


def test_comparison_sees_a_dropped_flag():
    """The comparison is not vacuous: the drift that motivated it (CMake's nvcc without
    --fmad=false) and a changed -O level are reported; CPython's -g is not."""
    base = ["-O3", "--fmad=false", "-std=c++20", "-DNDEBUG"]
    assert flag_differences(base, [f for f in base if f != "--fmad=false"], False) == (["--fmad=false"], [])
    assert flag_differences(base + ["-O0"], base, False) == (["-O0"], ["-O3"])
    assert flag_differences(["-g", "-Wsign-compare"] + base, base + ["-D_C_EXPORTS"], False) == ([], [])
    assert flag_differences(["-g"] + base, base, True) == (["-g"], [])
