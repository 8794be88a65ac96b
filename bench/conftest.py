"""pytest-benchmark suite: `python -m pytest bench --benchmark-only` (not part of the test run)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
