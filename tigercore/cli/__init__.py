"""The command registry behind `python -m tigercore <command>`.

A command is one function decorated with ``@command(name, help, arg(...), ...)`` in any module
of this package; ``build_parser()`` imports every module here, so adding a command means adding
that function (e.g. in tigercore/cli/bench.py) and nothing else.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    args: tuple
    passthrough: bool  # unparsed arguments go to the command as args.rest


COMMANDS: dict[str, Command] = {}


def arg(*flags, **kwargs):
    """One argparse argument: arg("--steps", type=int, default=300, help=...)."""
    return flags, kwargs


def command(name: str, help: str, *args, passthrough: bool = False):
    """Register ``run(args) -> exit code`` as the subcommand ``name``."""
    def register(run):
        COMMANDS[name] = Command(name, help, run, args, passthrough)
        return run
    return register


def build_parser() -> argparse.ArgumentParser:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    parser = argparse.ArgumentParser(prog="tigercore", description="tigercore command-line tools")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, add_help=not cmd.passthrough)
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
    return parser
