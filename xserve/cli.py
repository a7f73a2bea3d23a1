"""The ``xserve`` command line: operator commands over one data directory.

Every command exits 0 on success and 2 with a one-line ``xserve: error: ...``
reason on bad input, never a stack trace.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence

from xserve.config import ConfigError, XServeConfig, config_reasons, config_to_dict, load_config
from xserve.storage.layout import DataDirLayout

__all__ = ["main"]


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _config(args: argparse.Namespace) -> XServeConfig:
    overrides: dict = {}
    if getattr(args, "data_dir", None):
        overrides["storage"] = {"data_dir": args.data_dir}
    windows = {key: getattr(args, key) for key in ("negatives_max_age_ms", "corpus_max_age_ms")
               if getattr(args, key, None) is not None}
    if windows:
        overrides["train"] = windows
    return load_config(args.config, overrides=overrides)


_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """``500ms``, ``90s``, ``30m``, ``48h``, ``180d`` or plain milliseconds → ms (> 0, or 0 = the feed's window)."""
    value = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d") if value.endswith(u)), "")
    try:
        number = float(value[: len(value) - len(unit)] if unit else value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 48h, 180d or 3600000") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a window cannot be negative")
    return int(round(number * _DURATION_UNITS[unit or "ms"]))


def _cmd_config_show(args: argparse.Namespace) -> int:
    import json

    shown = config_to_dict(_config(args))
    if shown["serving"]["api_key"]:
        shown["serving"]["api_key"] = REDACTED  # a secret: show that one is set, never the key
    if not args.reasons:
        print(json.dumps(shown, indent=2))
        return 0
    for key, reason in config_reasons().items():  # one line per knob: its value and why it has it
        value = shown
        for part in key.split("."):
            value = value[part]
        print(f"{key} = {json.dumps(value)}" + (f"  # {reason}" if reason else ""))
    return 0


REDACTED = "<set, redacted>"


# --------------------------------------------------------------------------- data directory: seed, import


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default $XSERVE_DATA_DIR, else ./xserve-data)")


def _open_data_dir(args: argparse.Namespace):
    """The DataDir of ``--data-dir`` / $XSERVE_DATA_DIR / ./xserve-data (storage imported lazily: lancedb is slow)."""
    from xserve.storage import DataDir, DataDirError

    storage = _config(args).storage
    try:
        return DataDir(storage.data_dir, fsync=storage.fsync)
    except DataDirError as exc:
        raise CliError(str(exc)) from None


def _cmd_seed(args: argparse.Namespace) -> int:
    from xserve.storage import DataDirError
    from xserve.synth.seed import seed_data_dir

    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    data_dir = _open_data_dir(args)
    try:
        world = seed_data_dir(data_dir, args.size, args.seed, args.now_ms, force=args.force,
                              progress=not args.quiet and args.size in ("medium", "large"))
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    counts = ", ".join(f"{n:,} {name}" for name, n in world.counts().items())
    write_s = world.timings_s.get("write", 0.0)
    generate_s = sum(world.timings_s.values()) - write_s
    print(f"seeded a {args.size} world (seed {args.seed}) in {data_dir.path}: {counts} "
          f"(generated in {generate_s:.1f} s, written in {write_s:.1f} s)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from xserve.storage import DataDirError
    from xserve.storage.engagement_import import import_log, read_log

    try:
        table = read_log(args.input)  # a bad file fails before the data directory is opened
        report = import_log(_open_data_dir(args), args.input, table=table)
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    print("\n".join(report.lines()))
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from xserve import clock
    from xserve.loop.compaction import compact

    config = _config(args)
    if not DataDirLayout(config.storage.data_dir).root.is_dir():
        raise CliError(f"no data directory at {config.storage.data_dir}")
    print("\n".join(compact(config, clock.now_ms()).lines()))
    return 0


def _add_data_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    seed = add("seed", _cmd_seed, "write a synthetic world (users, graph, posts, engagements) to the data directory")
    seed.add_argument("--size", choices=("tiny", "small", "medium", "large"), default="tiny",
                      help="tiny (tests), small, medium (training target), large (benchmarks); default tiny")
    seed.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same world")
    seed.add_argument("--now-ms", type=int, default=None, metavar="MS",
                      help="the world's present, ms since epoch (default: now); fix it for identical tables")
    seed.add_argument("--force", action="store_true", help="replace a data directory that already holds data")
    seed.add_argument("--quiet", action="store_true", help="no progress bar (shown for medium and large)")
    _add_data_dir(seed)
    comp = add("compact", _cmd_compact, "retention and compaction: drop expired impression and Thunder segments, fold "
               "the user logs' engagements into the engagements table and rewrite those logs (app stopped)")
    _add_data_dir(comp)
    imp = add("import", _cmd_import, "load an engagement log (CSV or Parquet, see README) into the data directory")
    imp.add_argument("--input", required=True, metavar="FILE", help="the log file (.csv or .parquet)")
    _add_data_dir(imp)


def _cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict = {"storage": {"data_dir": args.data_dir}} if args.data_dir else {}
    serving = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if serving:
        overrides["serving"] = serving
    config = load_config(args.config, overrides=overrides)
    host, port = config.serving.host, config.serving.port
    if not 0 < port < 65536:
        raise CliError(f"--port must be in 1..65535, got {port}")
    if args.num_cpus is not None and args.num_cpus < 2:
        raise CliError(f"--num-cpus must be at least 2 (the app reserves 2 CPUs), got {args.num_cpus}")
    with socket.socket() as probe:
        # as the server binds (uvicorn sets SO_REUSEADDR): connections of a crashed predecessor left in
        # TIME_WAIT must not stop a restart; a port another process listens on still fails here
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    from xserve.app import serve_forever
    from xserve.synth.bootstrap import prepare_data_dir

    try:
        prepare_data_dir(config)  # seeding and training show progress here, before Ray starts
    except Exception as exc:  # noqa: BLE001 - one line, never a stack trace
        raise CliError(f"preparing {config.storage.data_dir}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    serve_forever(config, num_cpus=args.num_cpus)
    return 0


# --------------------------------------------------------------------------- phoenix: train / evaluate

_NO_DATA = "run `xserve seed` or `xserve import` first"


def _engagement_tables(data_dir: str, live: bool = False):
    """(engagements, posts or None, users or None) from a data directory, or a CliError saying how to get data.

    ``live``: the table's engagements plus those the API accepted (the user-store logs), as training reads them,
    and a fourth item, the counts of each.
    """
    from pathlib import Path

    if not Path(data_dir).is_dir():
        raise CliError(f"no data directory at {data_dir}; {_NO_DATA}")
    from xserve.storage.lance.tables import DataDir

    from xserve.loop.live_data import accepted_posts, training_engagements

    dd = DataDir(data_dir, create=False)
    # the posts table plus the posts created through the API (the catalog's logs), deletions applied
    posts, post_counts = accepted_posts(data_dir, ["post_id", "author_id", "created_at_ms", "text"])
    if live:
        engagements, counts = training_engagements(data_dir)
        if engagements.num_rows == 0:
            raise CliError(f"no engagements in {data_dir}; {_NO_DATA}")
        counts.update(posts_table=post_counts["table"], posts_live=post_counts["live"])
        return engagements, posts, dd.read_users() if dd.count("users") else None, counts
    if dd.count("engagements") == 0:
        raise CliError(f"no engagements in {data_dir}; {_NO_DATA}")
    users = dd.read_users() if dd.count("users") else None  # the context columns are the ranker's user context
    return dd.read_engagements(), posts, users


def train_version(config: XServeConfig, name: str | None = None, switch: bool = True, progress: bool = False,
                  since_ms: int | None = None, say: Callable[[str], None] = print) -> dict:
    """Train on the table's and the live engagements (the newest window from ``since_ms``), write a new model
    version beside the old ones, and switch ``models/CURRENT`` to it unless ``switch`` is False.

    Returns the version's manifest (with ``switched``). Shared by ``xserve train`` and the continuous job.
    """
    import time

    import numpy as np
    import pyarrow as pa

    from xserve import clock
    from xserve.loop.impressions import impression_arrays, read_impression_records, seen_feeds
    from xserve.phoenix.training.train import train
    from xserve.storage.model_versions import ModelVersionError, ModelVersions

    data_dir = config.storage.data_dir
    started = time.perf_counter()
    engagements, posts, users, counts = _engagement_tables(data_dir, live=True)
    if since_ms is not None:
        engagements = engagements.filter(pa.array(engagements.column("timestamp_ms").to_numpy() >= since_ms))
        if engagements.num_rows == 0:
            raise CliError(f"no engagements since {since_ms} in {data_dir}")
    impressions = None
    if config.loop.negatives == "impressions":
        # what the readers saw where their clients reported it (POST /v1/impressions), else what was served
        feeds, seen = seen_feeds(read_impression_records(DataDirLayout(data_dir).impression_logs, since_ms),
                                 config.loop.unreported_feeds)
        impressions = impression_arrays(feeds)
        counts["impressions"] = len(impressions["post_id"])
        counts.update({f"impression_{k}": v for k, v in seen.items()})
    say(f"training data: {counts['posts_table']:,} table posts + {counts['posts_live']:,} created through the API; "
        f"{counts['table']:,} table engagements + {counts['live_new']:,} live "
        f"({engagements.num_rows:,} rows{'' if since_ms is None else f' since {since_ms}'}); negatives: "
        f"{config.loop.negatives}" + (f" ({counts['impressions']:,} impressions: {counts['impression_seen_impressions']:,} "
                                      f"seen in {counts['impression_reported_feeds']:,} reported feeds of "
                                      f"{counts['impression_feeds']:,}; unreported feeds: {config.loop.unreported_feeds})"
                                      if impressions is not None else ""))
    versions = ModelVersions(data_dir)
    now_ms = clock.now_ms()
    try:
        name = name or versions.new_name(now_ms)
        out = versions.begin(name)
        result = train(engagements, posts, config, out_dir=out, progress=progress, users=users, impressions=impressions)
        m = result.metrics
        manifest = versions.finish(
            name, clock.now_ms(), ranker_version=m["versions"]["ranker"], towers_version=m["versions"]["towers"],
            negatives=config.loop.negatives, data={**counts, "rows": engagements.num_rows, "since_ms": since_ms,
                                                   "last_ms": int(np.max(engagements.column("timestamp_ms").to_numpy()))},
            split_ms=m["split_ms"], metrics={"ranker": m["ranker"], "towers": m["towers"]},
            seconds=round(time.perf_counter() - started, 1))
        say(f"trained on {m['entries']} aggregated engagements of {m['users']} users, {m['posts']} posts in "
            f"{time.perf_counter() - started:.0f} s ({m['threads']} torch threads): model version {name} "
            f"({manifest['ranker_version']}, {manifest['towers_version']})")
        manifest["switched"] = False
        if switch:
            versions.switch(name, clock.now_ms())
            removed = versions.prune(config.loop.keep_model_versions)
            manifest["switched"] = True
            say(f"models/CURRENT -> {name} (the Ranker replicas follow within loop.model_poll_s)"
                + (f"; pruned {', '.join(removed)}" if removed else ""))
    except (ValueError, ModelVersionError) as exc:
        raise CliError(str(exc)) from None
    return manifest


def _cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)
    manifest = train_version(config, name=args.name, switch=not args.no_switch, progress=not args.quiet)
    for kind in ("ranker", "towers"):
        print(f"{kind}: {DataDirLayout(config.storage.data_dir).model_version(manifest['version'])}/{kind}.pt")
    print("retrieval keeps the towers of the live embedding version until the posts are re-embedded by the new "
          "ones: python scripts/backfill_embeddings.py --data-dir DIR --towers-checkpoint <towers.pt above>")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import json

    from xserve import clock
    from xserve.storage.model_versions import ModelVersionError, ModelVersions

    config = _config(args)
    versions = ModelVersions(config.storage.data_dir)
    current = versions.current() or {}
    try:
        if args.models_command == "list":
            names = versions.names()
            if not names:
                print(f"no model versions in {versions.layout.models} (`xserve train` writes them)")
            for name in names:
                m = versions.manifest(name) or {}
                mark = "*" if name == current.get("version") else " "
                print(f"{mark} {name}  ranker {m.get('ranker_version')}  towers {m.get('towers_version')}  "
                      f"embeddings {m.get('embeddings') or '-'}  rows {m.get('data', {}).get('rows', '-')}")
        elif args.models_command == "show":
            name = args.name or current.get("version")
            if name is None:
                raise CliError(f"no current model version in {versions.layout.models}; name one")
            manifest = versions.manifest(name)
            if manifest is None:
                raise CliError(f"no complete model version {name}; `xserve models list` shows them")
            print(json.dumps({"current": name == current.get("version"), **manifest}, indent=2))
        else:  # rollback
            record = versions.rollback(clock.now_ms(), args.to)
            target = versions.manifest(record["version"]) or {}
            line = f"models/CURRENT -> {record['version']} (was {record['previous']})"
            if target.get("embeddings"):
                from xserve.storage.lance.embeddings import EmbeddingVersions, VersionError

                try:
                    EmbeddingVersions(config.storage.data_dir).switch(target["embeddings"])
                    line += f"; embeddings/CURRENT -> {target['embeddings']}"
                except VersionError as exc:
                    line += f"; embeddings left as they are ({exc})"
            print(line)
    except ModelVersionError as exc:
        raise CliError(str(exc)) from None
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from xserve.phoenix.training.evaluate import evaluate
    from xserve.phoenix.training.train import deterministic, load_ranker, load_towers, machine_num_threads, prepare

    config = _config(args)
    from xserve.storage.model_versions import ModelVersions

    layout = DataDirLayout(config.storage.data_dir)
    engagements, posts, users = _engagement_tables(config.storage.data_dir)
    ranker_path, towers_path = ModelVersions(layout.root).live_paths()  # the current model version
    if not ranker_path.is_file() or not towers_path.is_file():
        raise CliError(f"no trained models in {layout.models}; run `xserve train` first")
    try:
        ranker, towers = load_ranker(ranker_path), load_towers(towers_path)
        split_ms = ranker.extra.get("split_ms")
        if split_ms is None or towers.extra.get("split_ms") != split_ms:
            raise CliError(f"the checkpoints in {layout.models} do not record one train/validation split; "
                           "run `xserve train` again")
        config = msgspec.structs.replace(config, phoenix=ranker.config)
        _warn_window_change(config, ranker.extra.get("train_config") or {})
        data = prepare(engagements, posts, config, ranker.featurizer, split_ms=int(split_ms), users=users)
        with deterministic(config.train.seed, machine_num_threads(config.train.num_threads)):
            result = evaluate(data, ranker.model, towers.model, seed=config.train.seed,
                              oracle=_oracle(config.storage.data_dir), durations=args.durations,
                              warn=_warn)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result))
        return 0
    _print_evaluation(result)
    return 0


def _warn(line: str) -> None:
    print(f"xserve: warning: {line}", file=sys.stderr)


def _warn_window_change(config: XServeConfig, trained: dict) -> None:
    """A window that differs from the one the models were trained with is allowed (it is a question asked of
    the model), but said: the negatives or corpus then differ from training's."""
    for key in ("negatives_max_age_ms", "corpus_max_age_ms"):
        now, then = getattr(config.train, key), trained.get(key, 0)
        if now != then:
            _warn(f"train.{key} is {now} ms here but was {then} ms in training (0 = mixer.max_post_age_ms)")


def _oracle(data_dir: str):
    """The synthetic world's true action model when the data directory holds one, else None."""
    from xserve.storage.lance.tables import DataDir
    from xserve.synth.oracle import TrueActionModel

    ground_truth = DataDir(data_dir, create=False).read_ground_truth()
    if ground_truth is None:
        return None
    try:
        return TrueActionModel(ground_truth)
    except ValueError as exc:  # a world seeded before the oracle existed: evaluate without it
        print(f"xserve: warning: no oracle: {exc}", file=sys.stderr)
        return None


def _print_evaluation(result: dict) -> None:
    methods = {"model": result, **result["baselines"], **({"oracle": result["oracle"]} if "oracle" in result else {})}
    print(f"{'metric':<34}" + "".join(f"{name:>12}" for name in methods))

    def row(name: str, values: list[float | None]) -> None:
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        print(f"{name:<34}" + "".join(f"{fmt(v):>12}" for v in values))

    for metric in ("auc", "rce"):
        for action in result["ranker"][metric]:
            row(f"ranker {metric} {action}", [m["ranker"][metric].get(action) for m in methods.values()])
    row("ranker viewer_dependence favorite", [m["ranker"].get("viewer_dependence") for m in methods.values()])
    for section in ("retrieval", "next_engagement"):
        for key in result[section]:
            row(f"{section} {key}", [m[section].get(key) for m in methods.values()])
    durations = result.get("durations", {})
    for key in durations.get("model", {}):  # its own columns: model, the rows' mean, oracle
        print(f"duration mae {key}: " + ", ".join(f"{m} {v[key]:.4f}" for m, v in durations.items() if key in v))


def _add_phoenix_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    data_help = "data directory (default $XSERVE_DATA_DIR or ./xserve-data)"

    def add_windows(p: argparse.ArgumentParser) -> None:
        p.add_argument("--negatives-max-age", dest="negatives_max_age_ms", type=duration_ms, metavar="DURATION",
                       help="sampled negatives are posts created this long before the positive (train."
                       "negatives_max_age_ms; default the feed's 48 h); e.g. 180d for items relevant for months")
        p.add_argument("--corpus-max-age", dest="corpus_max_age_ms", type=duration_ms, metavar="DURATION",
                       help="the retrieval corpus holds posts this old at the query (train.corpus_max_age_ms; "
                       "default the feed's 48 h)")

    p = add("train", _cmd_train, "train the ranker and both retrieval towers on the data directory's engagements "
            "(seeded or imported, plus the live ones) into a new model version, and switch models/CURRENT to it")
    p.add_argument("--data-dir", metavar="DIR", help=data_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--name", help="the new version's name (default: the UTC time, 20261202T083000)")
    p.add_argument("--no-switch", action="store_true", help="write the version but leave models/CURRENT alone")
    add_windows(p)
    p = add("models", _cmd_models, "list, show or roll back the data directory's model versions")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = msub.add_parser("list", help="every complete version, * = current")
    show = msub.add_parser("show", help="one version's manifest (default: the current one)")
    show.add_argument("name", nargs="?")
    back = msub.add_parser("rollback", help="switch models/CURRENT (and its embeddings) back to the previous version")
    back.add_argument("--to", metavar="NAME", help="the version to switch to (default: the one CURRENT replaced)")
    for action in (listing, show, back):
        action.add_argument("--data-dir", metavar="DIR", help=data_help)
    p = add("evaluate", _cmd_evaluate, "offline metrics of the trained models beside baselines (and a synthetic "
            "world's oracle)")
    p.add_argument("--data-dir", metavar="DIR", help=data_help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--durations", action="store_true", help="add the duration heads' log-seconds error "
                   "(watch, profile visit, click dwell) beside the rows' mean and the oracle")
    add_windows(p)


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
    show.add_argument("--reasons", action="store_true",
                      help="one line per setting: its value and the reason for its default")
    show.set_defaults(fn=_cmd_config_show)
    _add_phoenix_commands(add)

    serve = add("serve", _cmd_serve, "run the For You server on a local Ray cluster (seeds a demo world on first run)")
    serve.add_argument("--data-dir", metavar="DIR", help="data directory (default $XSERVE_DATA_DIR or ./xserve-data)")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all of the machine's)")
    _add_data_commands(add)
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
