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

from blina_study.adapter import __version__
from blina_study.adapter.errors import BlinaError, DataFindings

__all__ = ["COMMANDS", "main"]

# command name -> module (order = order in --help)
COMMANDS: dict[str, str] = {
    "demo": "blina_study.adapter.commands.demo",
    "synth": "blina_study.adapter.commands.synth",
    "init-db": "blina_study.adapter.commands.init_db",
    "load-omop": "blina_study.adapter.commands.load_omop",
    "load-vocab": "blina_study.adapter.commands.load_vocab",
    "ingest": "blina_study.adapter.commands.ingest",
    "check": "blina_study.adapter.commands.check",
    "build": "blina_study.adapter.commands.build",
    "extract": "blina_study.adapter.commands.extract",
    "analyze": "blina_study.adapter.commands.analyze",
    "report": "blina_study.adapter.commands.report",
    "site-key": "blina_study.adapter.commands.site_key",
    "site-run": "blina_study.adapter.commands.site_run",
    "pool": "blina_study.adapter.commands.pool",
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
    log = logging.getLogger("blina_study")  # the library's modules log under their own names below it
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # a warning is not for the user's terminal: the command's own output says what matters
    logging.getLogger("blina_study.warnings").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)


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
        from blina_study.adapter.commands.common import check_identifiers

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
