"""The ``blina`` command line: a thin shell over the Python API.

Each command lives in ``adapter/commands/<name>.py`` and exposes ``HELP`` (one line), ``EXAMPLES``
(shown under ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.

Exit codes: 0 ok, 1 data findings (e.g. rejected records), 2 usage or internal error. Errors are
one line with a hint; ``--debug`` shows the traceback.

The CLI owns the terminal: library code logs with :mod:`logging` (loggers ``adapter.*``/``analysis.*``)
and never prints; :func:`main` configures logging (warnings and errors to stderr, everything with
``--debug``) and turns Python warnings (numpy's RuntimeWarnings of a diverging fit, library deprecations)
into debug log records instead of letting them reach the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from adapter import __version__
from adapter.errors import BlinaError, DataFindings

__all__ = ["COMMANDS", "main"]

# command name -> module (order = order in --help)
COMMANDS: dict[str, str] = {
    "demo": "adapter.commands.demo",
    "synth": "adapter.commands.synth",
    "init-db": "adapter.commands.init_db",
    "load-omop": "adapter.commands.load_omop",
    "load-vocab": "adapter.commands.load_vocab",
    "ingest": "adapter.commands.ingest",
    "check": "adapter.commands.check",
    "build": "adapter.commands.build",
    "extract": "adapter.commands.extract",
    "analyze": "adapter.commands.analyze",
    "report": "adapter.commands.report",
    "site-key": "adapter.commands.site_key",
    "site-run": "adapter.commands.site_run",
    "pool": "adapter.commands.pool",
}

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _available() -> dict[str, object]:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside a command: surface it
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blina",
        description="Re-run the multicenter blinatumomab pediatric B-ALL study from FHIR R4 or OMOP CDM v5.4 data.",
        epilog="Examples:\n  blina demo\n  blina ingest center1/ --site center1 --db blina.duckdb\n"
        "  blina build --db postgresql://reader@dbhost/omop --cdm-schema cdm --vocab-schema vocab\n\n"
        "Exit codes: 0 ok, 1 data findings (rejected records), 2 usage or error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blina-study {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog="Examples:\n" + "\n".join(f"  {e}" for e in mod.EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _configure_logging(debug: bool) -> None:
    """Log records of the library to stderr: warnings and errors, everything with ``--debug``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("adapter", "analysis"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.DEBUG if debug else logging.WARNING)
        log.propagate = False


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # a warning is not for the user's terminal: the command's own output says what matters
    logging.getLogger("adapter.warnings").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    debug = getattr(args, "debug", False)
    _configure_logging(debug)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _warning_to_log
        return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        from adapter.commands.common import check_identifiers

        check_identifiers(args)
        return int(args._run(args) or 0)
    except DataFindings as exc:
        print(f"data findings: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except BlinaError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (hint: rerun with --debug and report it)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
