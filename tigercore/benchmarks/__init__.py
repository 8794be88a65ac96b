"""Benchmarks behind `python -m tigercore bench` and bench/: memory-bandwidth ceilings, the fused
optimizer steps against baselines and peers, and the Analytic-DPM reductions."""
