"""CPU optimizer-step study (issue 3): GPT-2-small shapes (124M parameters) and one flat 64M
tensor; fp32, and bf16 parameters with fp32 momentum; 1 and 2 threads; every candidate of
tigercore.benchmarks.optim. Prints the tables of `tigercore bench` and writes JSON + PNG.

    python bench/bench_optim.py [--out DIR] [--threads 1,2] [--shapes gpt2-small,flat:67108864]
"""
import sys

from tigercore.__main__ import main

if __name__ == "__main__":
    defaults = ["bench", "--shapes", "gpt2-small,flat:67108864", "--threads", "1,2", "--no-dpm",
                "--out", "tigercore-bench-optim"]
    sys.exit(main(defaults + sys.argv[1:]))
