"""Command line: ``privsplit train | info | evaluate | attack | serve | infer | keygen | export | benchmark | tune``.

One module per command (``train.py``, ``info.py``, ...), each with its
``add_parser``; the arguments several commands share are in ``common.py``.
Errors in the user's input print one line and exit with status 2, never a
stack trace.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import PrivsplitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privsplit",
        description="Privacy-preserving split inference: train an obfuscator that runs on the client and a task "
        "network that runs on the server; only the anonymised representation z leaves the client.",
        epilog="Run `privsplit COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"privsplit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Each command lives in its own module of this package.
    from . import benchmark, evaluate, export, infer, info, serve, train, tune

    for register in (train.add_parser, info.add_parser, evaluate.add_commands, serve.add_parser, infer.add_parser,
                     infer.add_keygen_parser, export.add_parser, benchmark.add_parser, tune.add_parser):
        register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..progress import set_default

    # --no-progress silences data loading and file checks too, not only the stages given the flag
    set_default(False if getattr(args, "no_progress", False) else None)
    try:
        return args.func(args)
    except PrivsplitError as e:
        print(f"privsplit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nprivsplit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (privsplit info | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        set_default(None)  # main() called from Python (tests, notebooks) leaves the process as it was


if __name__ == "__main__":
    sys.exit(main())
