"""The ``logitloss`` command line: ``logitloss COMMAND [options]``.

Each command is one :class:`Command`: its name, a one-line help, an example for ``--help`` and
the module under ``_tools`` whose ``configure`` adds its options to its subparser and whose
``run`` runs it and returns the exit status. A new command (``eval``, ``stability``, ``bench``)
is one more entry in :data:`COMMANDS`.

Exit status: 0 on success, 1 for an expected failure (reported in one line on stderr, without a
traceback), 2 for a usage error (argparse), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from . import __version__

PROG = "logitloss"


class CommandError(Exception):
    """An expected failure of a command: reported as ``logitloss: error: ...``, exit status 1."""


@dataclass(frozen=True)
class Command:
    """A subcommand: ``configure`` adds its options, ``run`` executes it and returns the status.

    Both are the functions of the same name in ``logitloss._tools.<module>``, imported on first
    use; the module's expected failures (``DataError``) are reported as :class:`CommandError`.
    """

    name: str
    help: str
    example: str
    module: str

    def configure(self, parser: argparse.ArgumentParser) -> None:
        self._tool().configure(parser)

    def run(self, args: argparse.Namespace) -> int:
        from ._tools.files import DataError

        try:
            return self._tool().run(args)
        except DataError as error:
            raise CommandError(str(error)) from None

    def _tool(self) -> ModuleType:
        return importlib.import_module(f"._tools.{self.module}", __package__)


COMMANDS: tuple[Command, ...] = (
    Command(
        name="demo",
        help="TensorFlow's documented outputs beside logitloss's, and where the formulas fail",
        example="logitloss demo",
        module="demo",
    ),
    Command(
        name="eval",
        help="a loss over prediction files (.npy, .npz, CSV, Parquet), streamed in chunks",
        example="logitloss eval sparse --logits preds.npz:logits --labels preds.npz:labels\n"
        "  logitloss eval sigmoid --logits logits/ --labels labels.zarr --engine dask",
        module="eval.command",
    ),
    Command(
        name="stability",
        help="the error of the naive formula, TensorFlow's and logitloss against mpmath",
        example="logitloss stability --plot docs/stability.png",
        module="stability",
    ),
    Command(
        name="bench",
        help="speed against the memory limit, PyTorch, JAX and TensorFlow on the same arrays",
        example="logitloss bench --quick --loss sigmoid --csv bench.csv --plot bench.png",
        module="bench",
    ),
)


def _epilog() -> str:
    """One example per command, for ``logitloss --help``."""
    return "examples:\n" + "\n".join(f"  {command.example}" for command in COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cross-entropy losses from logits, exact to the last bit.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=f"example:\n  {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def _exit_status(code: object) -> int:
    """The status of a ``SystemExit`` raised by argparse (``None`` is success)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``logitloss`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    ``--help``, ``--version`` and usage errors return argparse's status (0, 0, 2) instead of
    raising ``SystemExit``, so ``main`` can be called in-process.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    try:
        return args.run(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 1


def _discard_stdout() -> None:
    """Point stdout at the null device once its reader has gone (``logitloss demo | head``), so
    that the final flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
