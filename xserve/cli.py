"""The ``xserve`` command line: operator commands over one data directory.

Every command exits 0 on success and 2 with a one-line ``xserve: error: ...``
reason on bad input, never a stack trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from xserve.config import ConfigError, XServeConfig, config_to_dict, load_config

__all__ = ["main"]


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _config(args: argparse.Namespace) -> XServeConfig:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["storage"] = {"data_dir": args.data_dir}
    return load_config(args.config, overrides=overrides)


def _cmd_config_show(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(config_to_dict(_config(args)), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    raise CliError("serving is not built yet (issue #7: the For You graph on Ray Serve); run `make test` meanwhile")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xserve", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML config file (defaults otherwise)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        return p

    config = sub.add_parser("config", help="inspect the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the effective configuration as JSON")
    show.add_argument("--data-dir", metavar="DIR", help="data directory (default $XSERVE_DATA_DIR or ./xserve-data)")
    show.set_defaults(fn=_cmd_config_show)

    add("serve", _cmd_serve, "run the For You server on a local Ray cluster")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CliError, ConfigError) as exc:
        print(f"xserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xserve: interrupted", file=sys.stderr)
        return 130
