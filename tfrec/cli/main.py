"""The ``tfrec`` command line: the only place that parses arguments.

Each subcommand lives in its own module ``tfrec/cli/<name>.py`` exposing
``register(subparsers) -> None`` (adds its parser, with ``--help`` text) and
``run(args) -> int`` (the exit code). Heavy imports (TensorFlow) happen inside
``run`` so ``tfrec --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tfrec._version import __version__

COMMANDS = ("train", "evaluate", "export", "recommend", "prepare", "serve", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Builds the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="tfrec",
        description=(
            "Train, evaluate, export and serve two-stage recommenders "
            "(two-tower retrieval + LSTM ranking) built on TensorFlow Recommenders."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tfrec {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (default: info)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tfrec.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"tfrec.cli.{name}":
                raise
            continue
        module.register(subparsers)
        subparsers.choices[name].set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfrec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # bad input, missing files, existing versions
        print(f"tfrec {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
