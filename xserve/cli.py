"""The ``xserve`` command line: operator commands over one data directory.

Every command exits 0 on success and 2 with a one-line ``xserve: error: ...``
reason on bad input, never a stack trace.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    overrides: dict = {"storage": {"data_dir": args.data_dir}} if args.data_dir else {}
    serving = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if serving:
        overrides["serving"] = serving
    config = load_config(args.config, overrides=overrides)
    if not 0 < config.serving.port < 65536:
        raise CliError(f"--port must be in 1..65535, got {config.serving.port}")
    from xserve.app import build_app, prepare_data_dir

    prepare_data_dir(config)  # seeding and training show progress here, before Ray starts
    import ray
    from ray import serve

    ray.init(include_dashboard=False, logging_level="WARNING", configure_logging=False)
    serve.start(http_options={"host": config.serving.host, "port": config.serving.port})
    serve.run(build_app(config, prepare=False), blocking=False)
    print(f"xserve: serving on http://{config.serving.host}:{config.serving.port} (Ctrl-C stops)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


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

    serve = add("serve", _cmd_serve, "run the For You server on a local Ray cluster (seeds a demo world on first run)")
    serve.add_argument("--data-dir", metavar="DIR", help="data directory (default $XSERVE_DATA_DIR or ./xserve-data)")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
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
