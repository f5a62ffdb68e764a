"""The ``tfrec`` command line: the only place that parses arguments.

Each subcommand lives in its own module ``tfrec/cli/<name>.py`` exposing
``register(subparsers) -> None`` (adds its parser, with ``--help`` text) and
``run(args) -> int`` (the exit code). Heavy imports (TensorFlow) happen inside
``run`` so ``tfrec --help`` is instant.

Error policy (the one place it is defined, :func:`describe_error`): bad user
input never prints a Python traceback. Every failure ends the command with one
line ``tfrec <command>: error: <message>`` on stderr and an exit code:

* 2, usage errors: ``ValueError`` (bad arguments or values; argparse also exits
  with 2), except :class:`~tfrec.data.interactions.DataError`;
* 1, runtime errors: ``OSError`` (missing files, permissions, existing
  versions, network), ``DataError`` (malformed data files), gRPC and serving
  errors, TensorFlow ``OpError`` (e.g. a broken model directory),
  :class:`CommandError` and the Keras-version guard;
* 1, anything else (a bug): the line adds ``run with -v for the traceback``;
* 130 after Ctrl-C.

With ``-v`` the traceback is printed before the line, for bug reports.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback
from collections.abc import Sequence

from tfrec._version import __version__
from tfrec.logs import configure as configure_logs

COMMANDS = (
    "train",
    "adapt",
    "evaluate",
    "export",
    "index",
    "recommend",
    "prepare",
    "synth",
    "serve",
    "demo",
)
#: Commands that never import TensorFlow (the quiet start-up import is skipped for them).
NO_TENSORFLOW = ("synth",)

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A runtime failure a subcommand explains in one line (exit code 1)."""


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
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging (default: info) and a traceback when a command fails",
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


def _runtime_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the command could not be done" (exit 1).

    Optional dependencies are only looked up when already imported, so this
    never imports TensorFlow or gRPC itself.
    """
    from tfrec._compat import KerasVersionError  # noqa: PLC0415
    from tfrec.data.interactions import DataError  # noqa: PLC0415

    types: list[type[BaseException]] = [
        OSError, DataError, CommandError, KerasVersionError, MemoryError
    ]  # fmt: skip
    lookups = (
        ("grpc", "RpcError"),
        ("tfrec.serving.client", "ServingError"),
        ("tfrec.serving.errors", "ServingError"),
        ("google.protobuf.message", "DecodeError"),
    )
    for module_name, attribute in lookups:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            types.append(getattr(module, attribute))
    tf_errors = sys.modules.get("tensorflow.python.framework.errors_impl")
    if tf_errors is not None:
        types.append(tf_errors.OpError)
    return tuple(types)


_TF_NOISE = re.compile(
    r"^(Graph execution error|Detected at node|<stack traces? unavailable>|\[\[)"
)
_TF_ASSERT = re.compile(r"^assertion failed: \[([^\]]*)\]")


def tensorflow_message(text: str) -> str:
    """The informative line of a TensorFlow error (no graph/node/stack noise)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not _TF_NOISE.match(line)] or lines[:1]
    line = re.sub(r"\s*\[Op:[^\]]*\]$", "", useful[0]) if useful else ""
    match = _TF_ASSERT.match(line)
    return match.group(1) if match else line


def _one_line(err: BaseException) -> str:
    """The error's message on one line (TensorFlow's node/stack details dropped)."""
    text = getattr(err, "message", None)  # tf.errors.OpError keeps the bare message here
    text = text if isinstance(text, str) and text else str(err)
    if type(err).__module__.startswith("tensorflow"):
        text = tensorflow_message(text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def describe_error(err: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception a command raised.

    Args:
        err: The exception.

    Returns:
        ``(exit code, message)``; see the module docstring for the policy.
    """
    runtime = _runtime_error_types()
    if isinstance(err, runtime):  # before ValueError: DataError is a ValueError
        message = _one_line(err)
        filename = getattr(err, "filename", None)  # OSError: name the file if str() does not
        if filename is not None and str(filename) not in message:
            message = f"{filename}: {message}"
        return EXIT_RUNTIME, message
    if isinstance(err, ValueError):
        return EXIT_USAGE, _one_line(err)
    return (
        EXIT_RUNTIME,
        f"unexpected {type(err).__name__}: {_one_line(err)} (run with -v for the traceback)",
    )


#: What to change when a command runs out of memory (added to the error line).
MEMORY_HINTS = {
    "train": "lower --batch-size, --max-history or --eval-users, or cap the catalogue "
    "(tfrec prepare --max-items / --min-item-count)",
    "evaluate": "lower --eval-users, or cap the catalogue at preparation (--max-items)",
    "prepare": "use --engine duckdb with --memory-limit below the free memory, lower "
    "--batch-rows, or cap the catalogue (--max-items / --min-item-count)",
    "export": "cap the catalogue (tfrec prepare --max-items) or use --index ivf",
    "index": "use --index ivf, or split the catalogue file",
}


def out_of_memory(err: BaseException) -> bool:
    """Python's MemoryError or TensorFlow's ResourceExhaustedError (an allocation failed)."""
    return isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfrec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Quiet by default: plain messages, TensorFlow's start-up noise hidden; -v shows all.
    configure_logs(verbose=args.verbose, import_tensorflow=args.command not in NO_TENSORFLOW)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # describe_error's policy covers every type
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        code, message = describe_error(err)
        if out_of_memory(err) and args.command in MEMORY_HINTS:
            message = f"out of memory: {message}; {MEMORY_HINTS[args.command]}"
        print(f"tfrec {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    # Run the canonical module, so that CommandError raised by subcommands (which
    # import tfrec.cli.main) is the class describe_error checks.
    from tfrec.cli import main as _cli  # noqa: PLW0406

    sys.exit(_cli.main())
