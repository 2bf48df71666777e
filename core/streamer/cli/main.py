"""The ``streamer`` command: run, check, list, describe, config sample, new-plugin, tap,
status, release, top, serve, fleet.

Heavy imports (grpc, the host) happen inside the commands that need them, so ``list`` and
``check`` start fast and never import gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.base.redact import redact_text
from streamer.host.config import LOG_LEVELS, Config, ConfigError, find_config, load_config

if TYPE_CHECKING:
    from streamer.server.reference import ServerTLS

__all__ = ["main"]

EXIT_USAGE = 2
DEFAULT_MAX_CALLS = (
    1024  # streamer.server.reference.DEFAULT_MAX_CALLS (not imported: no gRPC for --help)
)


def _err(message: str) -> None:
    print(f"streamer: {redact_text(message)}", file=sys.stderr)


def _load(args: argparse.Namespace, *, required: bool = True) -> tuple[Path | None, Config | None]:
    path = find_config(args.config, os.environ)
    if path is None:
        if required:
            raise ConfigError(
                "streamer.toml",
                "",
                "no config file found (searched --config, $STREAMER_CONFIG, ./streamer.toml, "
                "$XDG_CONFIG_HOME/streamer/streamer.toml, /etc/streamer/streamer.toml); "
                "try `streamer run --demo`",
            )
        return None, None
    return path, load_config(path)


def _load_lenient(args: argparse.Namespace) -> tuple[Path | None, Config | None, str | None]:
    """For commands that only read a running host or the installed plugins: a config file that
    has become invalid is reported (as the third item) instead of stopping the command."""
    try:
        path, config = _load(args, required=False)
    except ConfigError as exc:
        return find_config(args.config, os.environ), None, str(exc)
    return path, config, None


def _raw_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, or ``{}`` when it cannot be read or parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return data


def _version(dist: str = "streamer") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


# -- commands --------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from streamer.host.checks import LoadFailed, check, file_problems, resolve_connection
    from streamer.host.plugins import Problem

    def problem_doc(p: Problem | str) -> dict[str, str]:
        if isinstance(p, Problem):
            return {"subject": redact_text(p.subject), "message": redact_text(p.message)}
        return {"subject": "", "message": redact_text(str(p))}

    def refuse(
        path: Path | str, problems: Sequence[Problem | str], warnings: Sequence[str] = ()
    ) -> int:
        failed = LoadFailed(problems)
        if args.json:
            doc = {
                "config": str(path),
                "ok": False,
                "problems": [problem_doc(p) for p in problems],
                "warnings": list(warnings),
            }
            print(json.dumps(doc, indent=2))
        else:
            print("\n".join([f"{path}: NOT OK\n{failed}", *(f"  warning: {w}" for w in warnings)]))
        return EXIT_USAGE

    try:
        path, config = _load(args)
    except ConfigError as exc:
        # The same numbered report as every other problem: the file's, then its plugin tables'.
        return refuse(exc.path, file_problems(exc))
    assert path is not None and config is not None
    from streamer.host.downgrades import downgrades

    # Deprecated spellings, then every security downgrade the config shows, naming the key
    # (docs/security.md).
    warnings = [redact_text(w) for w in (*config.deprecations, *downgrades(config))]
    try:
        loaded, hooks = check(config)
    except LoadFailed as exc:
        return refuse(path, exc.problems, warnings)
    conn = resolve_connection(config)
    streams = [name for lp in loaded for name in lp.stream_names]
    probed = _probe(config, streams, args) if args.connect else None
    failed = isinstance(probed, str) or any(not r.ok for r in probed or ())
    if args.json:
        doc: dict[str, Any] = {
            "config": str(path),
            "ok": not failed,
            "plugins": [
                {
                    "name": lp.plugin.name,
                    "dist": lp.plugin.dist,
                    "version": lp.plugin.version,
                    "streams": list(lp.stream_names),
                }
                for lp in loaded
            ],
            "observers": [{"name": p.name, "dist": p.dist, "version": p.version} for p, _ in hooks],
            "connection": conn.to_json(),
            "problems": [],
            "warnings": warnings,
        }
        if isinstance(probed, str):
            doc["problems"] = [{"subject": "cloud", "message": probed}]
        elif probed is not None:
            doc["streams"] = [{"stream": r.stream, "ok": r.ok, "detail": r.detail} for r in probed]
        print(json.dumps(doc, indent=2))
        return EXIT_USAGE if failed else 0
    print(f"{path}: OK" + (f" with {len(warnings)} warning(s)" if warnings else ""))
    for warning in warnings:
        print(f"  warning: {warning}")
    for lp in loaded:
        print(f"  {lp.plugin.display} {lp.plugin.version}: streams {', '.join(lp.stream_names)}")
    for plugin, _ in hooks:
        print(f"  observer {plugin.display} {plugin.version}")
    print("  connection (not dialled):" if probed is None else "  connection:")
    for line in conn.describe():
        print(f"    {line}")
    if isinstance(probed, str):
        print(f"  cannot connect: {probed}")
        return EXIT_USAGE
    for r in probed or ():
        print(
            f"  stream {r.stream}: {r.detail}"
            if r.ok
            else f"  stream {r.stream}: PROBLEM: {r.detail}"
        )
    bad = sum(not r.ok for r in probed or ())
    if bad:
        print(f"{bad} of {len(streams)} stream{'s' if len(streams) != 1 else ''} failed")
        return EXIT_USAGE
    return 0


def _probe(config: Config, streams: list[str], args: argparse.Namespace) -> list[Any] | str:
    """``check --connect``: one GetUpdates per stream (ProbeResult each), or why the
    connection could not even be set up."""
    from streamer.cli.probe import probe_streams
    from streamer.client.connection import RegistryError
    from streamer.host.host import build_registry

    try:
        registry = build_registry(config)
    except RegistryError as exc:
        return str(exc)
    cloud = config.require_cloud()
    return asyncio.run(
        probe_streams(registry, streams, gateway_id=cloud.gateway_id, timeout=args.timeout)
    )


def cmd_list(args: argparse.Namespace) -> int:
    from streamer.cli.tables import format_plugins
    from streamer.host.plugins import (
        LISTENERS_GROUP,
        find_plugins,
        load_plugins,
        plugin_rows,
        rows_to_json,
    )

    path, config, problem = _load_lenient(args)
    found = find_plugins(LISTENERS_GROUP)
    enabled: Sequence[str] = config.plugins if config else ()
    if problem is not None and path is not None:
        _err(f"{problem}\n  (listing installed plugins; enabled names read from the file as is)")
        raw = _raw_toml(path).get("plugins")
        if isinstance(raw, list):
            enabled = [name for name in raw if isinstance(name, str)]
    result = None
    if config is not None and enabled:
        result = load_plugins(LISTENERS_GROUP, enabled, config.plugin_tables)
    rows = plugin_rows(found, enabled, result)
    print(rows_to_json(rows) if args.json else format_plugins(rows))
    if not rows and not args.json:
        print("(no plugins installed in the 'streamer.listeners' entry-point group)")
    return 0


def _start_observability(
    config: Config,
    owners: Mapping[str, str],
    staleness: Mapping[str, float],
    releaser: Callable[[str], dict[str, Any]],
) -> object:
    """Imported only when ``[metrics] address`` is set: prometheus-client is the metrics extra."""
    from streamer.observability.metrics import start_observer

    return start_observer(config, owners, staleness, releaser)


def cmd_run(args: argparse.Namespace) -> int:
    from streamer.host.logsetup import configure_logging

    if args.demo:
        from streamer.server.demo import run_demo

        return run_demo(
            interval=args.demo_interval,
            duration=args.demo_duration,
            log_level=args.log_level or "INFO",
            log_format=args.log_format or "human",
        )

    from streamer.host.checks import LoadFailed, file_problems

    try:
        path, config = _load(args)
    except ConfigError as exc:  # refuse to start, listing every problem of the file
        _err(f"{exc.path}: not started\n{LoadFailed(file_problems(exc))}")
        return EXIT_USAGE
    assert path is not None and config is not None
    configure_logging(args.log_level or config.log.level, args.log_format or config.log.format)

    from streamer.client.connection import RegistryError
    from streamer.host.downgrades import downgrades
    from streamer.host.host import Host

    host_log = logging.getLogger("streamer.host.host")
    for warning in config.deprecations:
        host_log.warning("%s", warning)
    for warning in downgrades(config):  # what `streamer check` warns about, in the journal too
        host_log.warning("security downgrade: %s", warning)
    host = Host(config, reload_config=lambda: load_config(path), observability=_start_observability)
    try:
        return asyncio.run(host.run())
    except LoadFailed as exc:
        _err(f"{path}: not started\n{exc}")
        return EXIT_USAGE
    except RegistryError as exc:
        _err(f"{path}: cloud: {exc}")
        return EXIT_USAGE


def _serve_tls(args: argparse.Namespace) -> tuple[ServerTLS | None, str | None]:
    """The server's TLS settings from the flags, or the reason they are refused. Fails closed:
    any TLS flag needs both --tls-cert and --tls-key; plaintext off loopback needs --insecure."""
    from streamer.client.connection import is_loopback
    from streamer.server.reference import ServerTLS

    given = [
        flag
        for flag, value in (
            ("--tls-cert", args.tls_cert),
            ("--tls-key", args.tls_key),
            ("--client-ca", args.client_ca),
            ("--require-client-cert", args.require_client_cert),
        )
        if value
    ]
    missing = [f for f, v in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)) if not v]
    if given and missing:
        return None, (
            f"{' and '.join(given)} given without {' and '.join(missing)}; TLS needs both "
            "--tls-cert and --tls-key (refusing to start without TLS)"
        )
    if args.require_client_cert and not args.client_ca:
        return None, "--require-client-cert needs --client-ca (the CA that signs client certs)"
    if given:
        if args.insecure:
            return None, "--insecure contradicts the TLS flags given; drop one or the other"
        return ServerTLS(args.tls_cert, args.tls_key, args.client_ca), None
    if not args.insecure and not is_loopback(args.address):
        return None, (
            f"plaintext on non-loopback address {args.address!r} needs --insecure "
            "(or serve TLS with --tls-cert and --tls-key)"
        )
    return None, None


def cmd_serve(args: argparse.Namespace) -> int:
    from streamer.host.logsetup import configure_logging

    configure_logging(args.log_level, args.log_format)
    from streamer.server.reference import ReferenceServer, run_server
    from streamer.server.sources import SourceError

    tls, problem = _serve_tls(args)
    if problem is not None:
        _err(f"serve: {problem}")
        return EXIT_USAGE
    if args.max_calls < 1:
        _err(f"serve: --max-calls must be >= 1, got {args.max_calls}")
        return EXIT_USAGE
    modes = {}
    for item in args.stream_mode or ():
        name, sep, mode = item.partition("=")
        if not sep:
            _err(f"serve: --stream-mode expects STREAM=MODE, got {item!r}")
            return EXIT_USAGE
        modes[name] = mode

    if (args.data is None) == (args.source is None):
        _err("serve: give the data as DATA or as --source, exactly once")
        return EXIT_USAGE
    spec = args.source if args.source is not None else args.data
    from streamer.server.pgsource import redact_dsn

    def started(server: ReferenceServer) -> None:
        shown = redact_dsn(spec) if "://" in spec else spec
        print(f"streamer serve: {shown} on {server.address} (mode {args.mode})", flush=True)

    try:
        asyncio.run(
            run_server(
                spec,
                args.address,
                args.mode,
                tls,
                modes=modes,
                max_calls=args.max_calls,
                on_started=started,
                status_address=args.status_address,
            )
        )
    except (SourceError, ValueError, OSError) as exc:
        _err(f"serve: {exc}")
        return EXIT_USAGE
    return 0


def cmd_tap(args: argparse.Namespace) -> int:
    from streamer.cli.tap import tap
    from streamer.client.connection import RegistryError
    from streamer.host.host import build_registry

    path, config = _load(args)
    assert path is not None and config is not None
    try:
        registry = build_registry(config)
    except RegistryError as exc:
        _err(f"{path}: cloud: {exc}")
        return EXIT_USAGE
    if not args.json:
        print(f"streamer tap: {args.stream} - Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        return asyncio.run(
            tap(
                registry,
                args.stream,
                out=sys.stdout,
                err=sys.stderr,
                values=args.values,
                as_json=args.json,
                interval=config.streaming.interval,
                gateway_id=config.require_cloud().gateway_id,
            )
        )
    except KeyboardInterrupt:
        return 0


def _status_address(args: argparse.Namespace, command: str) -> str | None:
    """The host endpoint to query: --address, else the config's [metrics] address (read even
    from a config file that has become invalid). None after printing why there is none."""
    from streamer.cli.status import query_address

    if args.address is not None:
        return str(args.address)
    path, config, problem = _load_lenient(args)
    configured = config.metrics.address if config is not None else None
    if problem is not None and path is not None:
        # The running host was started from an older, valid version of this file: all
        # status needs from it is the endpoint's address.
        metrics = _raw_toml(path).get("metrics")
        raw = metrics.get("address") if isinstance(metrics, dict) else None
        configured = raw if isinstance(raw, str) and raw else None
        if configured is not None:
            _err(f"note: {path} is not valid now ({problem}); using its [metrics] address")
    if configured is None:
        if problem is not None:
            _err(problem)
        where = f"{path}" if path is not None else "no config file found"
        _err(
            f"{command}: no address: pass --address HOST:PORT or set [metrics] address "
            f"in the config ({where})"
        )
        return None
    address = query_address(configured)
    if address.endswith(":0"):
        _err(f"{command}: {path}: [metrics] address uses port 0; pass --address HOST:PORT")
        return None
    return address


def cmd_describe(args: argparse.Namespace) -> int:
    from streamer.cli.describe import DescribeError, describe

    try:
        print(describe(args.plugin))
    except DescribeError as exc:
        _err(f"describe: {exc}")
        return EXIT_USAGE
    return 0


def cmd_config_sample(args: argparse.Namespace) -> int:
    from streamer.cli.describe import DescribeError, sample

    try:
        sys.stdout.write(sample(args.plugins))
    except DescribeError as exc:
        _err(f"config sample: {exc}")
        return EXIT_USAGE
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from streamer.cli.scaffold import ScaffoldError, new_plugin

    try:
        where = new_plugin(args.name, Path(args.dir) if args.dir else None)
    except ScaffoldError as exc:
        _err(f"new-plugin: {exc}")
        return EXIT_USAGE
    print(f"wrote {where}; next:")
    print(f'  cd {where} && pip install -e ".[test]" && pytest')
    print(f'  then enable it: plugins = ["{args.name}"] (streamer config sample {args.name})')
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import json

    from streamer.cli.status import HostUnreachable, fetch_status, format_fleet

    try:
        doc = fetch_status(args.address, timeout=args.timeout)
    except HostUnreachable as exc:
        _err(
            f"fleet: no fleet view at {args.address} ({exc.reason}); "
            "is `streamer serve --status-address` running there?"
        )
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else format_fleet(doc))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from streamer.cli.status import HostUnreachable, fetch_status, format_status

    address = _status_address(args, "status")
    if address is None:
        return EXIT_USAGE
    try:
        doc = fetch_status(address, timeout=args.timeout)
    except HostUnreachable as exc:
        _err(str(exc))
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else format_status(doc))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Exit 0: released; 1: nothing held on that stream; 2: no host, refused, no such stream."""
    from streamer.cli.status import HostUnreachable, post_release

    address = _status_address(args, "release")
    if address is None:
        return EXIT_USAGE
    try:
        code, doc = post_release(address, args.stream, timeout=args.timeout)
    except HostUnreachable as exc:
        _err(f"release: {exc}")
        return EXIT_USAGE
    detail = str(doc.get("detail") or doc.get("error") or f"HTTP {code}")
    if code == 200:
        print(f"stream {args.stream}: {detail}")
        return 0
    if code == 409:
        print(f"stream {args.stream}: nothing held")
        return 1
    _err(f"release: {address}: {detail}")
    return EXIT_USAGE


def cmd_top(args: argparse.Namespace) -> int:
    from streamer.cli.status import fetch_status
    from streamer.cli.top import watch

    address = _status_address(args, "top")
    if address is None:
        return EXIT_USAGE
    if args.interval <= 0:
        _err("top: --interval must be positive")
        return EXIT_USAGE
    try:
        return watch(
            address,
            lambda: fetch_status(address, timeout=args.timeout),
            out=sys.stdout,
            interval=args.interval,
            clear=sys.stdout.isatty(),
            iterations=args.iterations,
        )
    except KeyboardInterrupt:
        return 0


# -- parser ----------------------------------------------------------------------------------


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option with a default value says so; flags and unset options say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default:" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {default})"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 86400, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Keep a gateway in sync with its cloud through listener plugins.",
    )
    parser.add_argument(
        "--version", action="version", version=f"streamer {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = functools.partial(sub.add_parser, formatter_class=_DefaultsFormatter)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="config file; else $STREAMER_CONFIG, ./streamer.toml, "
            "$XDG_CONFIG_HOME/streamer/streamer.toml, /etc/streamer/streamer.toml",
        )
        return p

    def log_options(p: argparse.ArgumentParser, level: str | None, fmt: str | None) -> None:
        what = "" if level else " (default: the config's [log] level)"
        p.add_argument(
            "--log-level",
            type=str.upper,
            choices=LOG_LEVELS,
            default=level,
            metavar="LEVEL",
            help=f"one of {', '.join(LOG_LEVELS)}, any case{what}",
        )
        what = "" if fmt else " (default: the config's [log] format)"
        p.add_argument(
            "--log-format", choices=("human", "json"), default=fmt, help=f"log line format{what}"
        )

    run = with_config(add_parser("run", help="run every enabled plugin's streams"))
    run.add_argument("--demo", action="store_true", help="embedded demo: no config, no cloud")
    run.add_argument("--demo-interval", type=float, default=3.0, help=argparse.SUPPRESS)
    run.add_argument("--demo-duration", type=float, default=None, help=argparse.SUPPRESS)
    log_options(run, None, None)
    run.set_defaults(func=cmd_run)

    chk = with_config(add_parser("check", help="run load-time checks (and, asked, connect)"))
    chk.add_argument(
        "--connect",
        action="store_true",
        help="also connect: TLS handshake and one GetUpdates per enabled stream",
    )
    chk.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        help="seconds to wait per stream with --connect",
    )
    chk.add_argument("--json", action="store_true", help="machine-readable report")
    chk.set_defaults(func=cmd_check)

    lst = with_config(add_parser("list", help="installed plugins and their status"))
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    st = with_config(add_parser("status", help="show a running host's streams"))
    st.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the host's observability endpoint (default: the config's [metrics] address)",
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the host")
    st.set_defaults(func=cmd_status)

    rel = with_config(
        add_parser(
            "release",
            help="apply the snapshot a running host holds on STREAM now (exit 1: none held)",
        )
    )
    rel.add_argument("stream", help="the stream whose held batch to apply")
    rel.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the host's observability endpoint (default: the config's [metrics] address)",
    )
    rel.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the host")
    rel.set_defaults(func=cmd_release)

    top = with_config(add_parser("top", help="a live, refreshing view of a running host"))
    top.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the host's observability endpoint (default: the config's [metrics] address)",
    )
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the host")
    top.add_argument(
        "--iterations", type=int, default=None, metavar="N", help="stop after N screens"
    )
    top.set_defaults(func=cmd_top)

    dsc = add_parser("describe", help="a plugin's streams and config keys, from its schema")
    dsc.add_argument("plugin", help="the plugin's entry-point name (enabled or not)")
    dsc.set_defaults(func=cmd_describe)

    cfg = add_parser("config", help="config file helpers")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    smp = cfg_sub.add_parser(
        "sample",
        help="print a commented streamer.toml that `streamer check` accepts",
        formatter_class=_DefaultsFormatter,
    )
    smp.add_argument(
        "plugins", nargs="*", help="plugins to enable (default: every installed one with a schema)"
    )
    smp.set_defaults(func=cmd_config_sample)

    new = add_parser("new-plugin", help="write a ready-to-test plugin package")
    new.add_argument("name", help="entry-point name (lower case letters, digits, _)")
    new.add_argument("--dir", help="where to write it (default: ./streamer-NAME)")
    new.set_defaults(func=cmd_new_plugin)

    tp = with_config(
        add_parser("tap", help="print a stream's batches as the cloud sends them (read-only)")
    )
    tp.add_argument("stream", help="the stream name to request")
    tp.add_argument("--values", action="store_true", help="print values too (may be secret)")
    tp.add_argument("--json", action="store_true", help="one JSON object per batch")
    tp.set_defaults(func=cmd_tap)

    srv = add_parser("serve", help="run the reference Streamer server over local data")
    srv.add_argument(
        "data",
        nargs="?",
        help="directory (one subdirectory per stream) or .sqlite/.db file",
    )
    srv.add_argument(
        "--source",
        metavar="SPEC",
        help="the data as DATA above, or postgresql://USER[:PASS]@HOST[:PORT]/DB for a fleet "
        "of replicas over one database (needs streamer[server]; see docs/server.md)",
    )
    srv.add_argument("--address", default="127.0.0.1:50051", help="host:port to listen on")
    srv.add_argument(
        "--mode", choices=("poll", "push"), default="poll", help="how streams are served"
    )
    srv.add_argument(
        "--stream-mode",
        action="append",
        metavar="STREAM=MODE",
        help="serve one stream in another mode (repeatable)",
    )
    srv.add_argument("--tls-cert", help="server certificate chain (PEM)")
    srv.add_argument("--tls-key", help="server private key (PEM)")
    srv.add_argument(
        "--client-ca",
        help="CA that signs client certificates (PEM); clients without one are refused",
    )
    srv.add_argument(
        "--require-client-cert",
        action="store_true",
        help="accepted for compatibility: --client-ca already requires client certificates",
    )
    srv.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext on a non-loopback address (anyone on the network can read)",
    )
    srv.add_argument(
        "--max-calls",
        type=int,
        default=DEFAULT_MAX_CALLS,
        metavar="N",
        help="concurrent calls served; more get RESOURCE_EXHAUSTED",
    )
    srv.add_argument(
        "--status-address",
        metavar="HOST:PORT",
        help="serve the fleet view (which gateway has applied what) as /status JSON and "
        "/metrics; read it with `streamer fleet`",
    )
    log_options(srv, "INFO", "human")
    srv.set_defaults(func=cmd_serve)

    flt = add_parser("fleet", help="which gateways are in sync, from a server's fleet view")
    flt.add_argument(
        "--address", required=True, metavar="HOST:PORT", help="the server's --status-address"
    )
    flt.add_argument("--json", action="store_true", help="machine-readable output")
    flt.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    flt.set_defaults(func=cmd_fleet)
    return parser


def quiet_grpc_core(environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep gRPC's C-core log lines (``I1202 ... chttp2_transport.cc``, ``Handshake failed``)
    off the operator's terminal and journal: failures are reported in this project's words.
    A ``GRPC_VERBOSITY`` the user set is respected. Must run before grpc is imported."""
    environ.setdefault("GRPC_VERBOSITY", "NONE")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_grpc_core()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
