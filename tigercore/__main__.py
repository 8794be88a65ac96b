"""`python -m tigercore <command>` and the `tigercore` console script.

Commands live in tigercore/cli/ (info, demo, dpm-demo); `python -m tigercore --help` lists them.
``main(argv)`` returns the exit code, so tests and other tools can call it in-process.
"""
from __future__ import annotations

import sys

from tigercore.cli import COMMANDS, build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    cmd = COMMANDS[args.command]
    if rest and not cmd.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return cmd.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
