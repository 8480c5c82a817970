"""The ``syre`` command: a thin argparse layer over library calls.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; that function
adds a parser whose ``func`` attribute takes the parsed namespace and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .._version import __version__

#: Modules that contribute subcommands (each has ``register(subparsers)``).
COMMAND_MODULES = [
    "syre.app.demo",
    "syre.bench.cli",
    "syre.app.diagnose",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syre", description="syre: remove parameter symmetries from neural-network training."
    )
    parser.add_argument("--version", action="version", version=f"syre {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
