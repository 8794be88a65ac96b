"""Analytic-DPM kernel benchmarks (issue 5): eps_stats on bf16 inputs against read bandwidth and
the torch baseline, minplus_dp at N = 1000, K = 100 and N = 4000, K = 1000 against the reference.
The code lives in tigercore/benchmarks/dpm.py (so `tigercore bench` can run it too).

    python bench/bench_dpm.py [--threads 1,2] [--reps 10] [--only reduce|dp] [--json]
"""
from tigercore.benchmarks.dpm import main

if __name__ == "__main__":
    main()
