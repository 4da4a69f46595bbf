"""`raychat up | down | status | config` — the operator's entry point."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from cluster.model_store import ModelStoreError
from cluster.processes import ProcessError
from cluster.settings import SettingsError, load_settings

BENCH_SUITES = [
    "engine",
    "knowledge",
    "retrieval",
    "cache",
    "ingress",
    "batch",
    "multinode",
    "auth",
    "planes",
    "prefix",
    "quant",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raychat", description="private-knowledge chat on Ray Serve")
    parser.add_argument("--config", help="YAML settings file (default: $RAYCHAT_CONFIG or ./raychat.yaml)")
    parser.add_argument("--profile", help="settings profile: cpu, gpu, tier1, tier2, tier3")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Ray, the Serve app and the ingress; print the URL")
    up.add_argument("--ingress", choices=["nginx", "traefik", "both", "none"], help="override ingress.kind")
    sub.add_parser("down", help="stop what `up` started (keeps the data)")
    sub.add_parser("status", help="Ray nodes, deployments and replicas, ingress, URL, colours")
    upgrade = sub.add_parser(
        "upgrade",
        help="start NEW settings (model, engine options, code) beside the running version, smoke-test "
        "them, shift traffic step by step, roll back by itself on errors",
    )
    upgrade.add_argument("--config", dest="new_config", required=True, help="the new YAML settings")
    upgrade.add_argument(
        "--strategy",
        choices=["blue-green", "rolling"],
        default="blue-green",
        help="blue-green: a whole second copy on free capacity (default); rolling: room for one more "
        "replica of each deployment, replicas replaced one at a time",
    )
    upgrade.add_argument(
        "--reindex", action="store_true", help="re-embed every knowledge base for a new embedding model"
    )
    sub.add_parser("rollback", help="send every request back to the running version during an upgrade")
    join = sub.add_parser("join", help="add this machine to a running Ray head as a worker node")
    join.add_argument("--address", help="the head's GCS host:port (default: this config's head)")
    join.add_argument("--name", default="worker", help="local name of this node (pid file, logs)")
    join.add_argument("--num-gpus", type=int, default=0, help="GPUs this node declares")
    join.add_argument("--num-cpus", type=int, help="logical CPUs this node offers (default: Ray counts)")
    join.add_argument("--resources", help="extra Ray resources as JSON, e.g. '{\"llm\": 2}'")
    leave = sub.add_parser("leave", help="stop a worker node that `join` started here")
    leave.add_argument("name", nargs="?", default="worker")
    sub.add_parser("config", help="print the effective settings as JSON")
    sub.add_parser("prepare-model", help="convert and cache the bundled model; print its path")
    kb = sub.add_parser("kb", help="knowledge bases: `kb ingest NAME PATH...`, `kb sync NAME FOLDER`")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    ingest = kb_sub.add_parser("ingest", help="ingest files/folders in parallel (creates the KB if needed)")
    ingest.add_argument("name")
    ingest.add_argument("paths", nargs="+")
    sync = kb_sub.add_parser("sync", help="one folder-sync pass: add, replace, mark deleted")
    sync.add_argument("name")
    sync.add_argument("folder")
    batch = sub.add_parser("batch", help="answer a JSONL file of chat requests (Ray Data + vLLM), resumable")
    batch.add_argument("--input", required=True, help="JSONL: {custom_id, body: {messages, ...}} per line")
    batch.add_argument("--output", required=True, help="JSONL answers; an existing file is resumed")
    batch.add_argument("--knowledge-base", help="answer with context from this knowledge base")
    batch.add_argument("--limit", help="only the first N rows of the input")
    batch.add_argument(
        "--engine",
        choices=("auto", "serve", "dedicated"),
        help="serve: the running LLM deployment; dedicated: an engine of its own; auto: by size and room",
    )
    batch.add_argument("--batch-size", help="rows per dedicated-engine batch (batch.dedicated_batch_size)")
    batch.add_argument("--concurrency", help="vLLM engine replicas (default 1)")
    load = sub.add_parser("loadtest", help="the Locust suite, headless, through an entry point")
    load.add_argument("--tier", choices=["1", "2", "3"], default="1")
    load.add_argument("--ingress", dest="target", choices=["nginx", "traefik", "direct"], default="nginx")
    load.add_argument("--users", type=int, help="fixed user count instead of the tier's shape")
    load.add_argument("--duration", default="30s", help="with --users: how long (Locust's -t)")
    load.add_argument("user_classes", nargs="*", help="only these Locust user classes")
    from cluster import keys

    keys.add_parser(sub)
    firewall = sub.add_parser(
        "firewall", help="nftables rules for this node's role: print, --apply or --remove"
    )
    firewall.add_argument("--role", choices=["edge", "head", "worker"], help="what this machine runs")
    firewall_action = firewall.add_mutually_exclusive_group()
    firewall_action.add_argument(
        "--apply", action="store_true", help="load the rules (root; replaces raychat's table)"
    )
    firewall_action.add_argument("--remove", action="store_true", help="delete raychat's nftables table")
    ingress = sub.add_parser(
        "ingress", help="only the ingress (Nginx/Traefik per ingress.kind): for an edge host of its own"
    )
    ingress.add_argument("action", choices=["start", "stop"])
    sub.add_parser(
        "ray-token",
        help="make Ray's token data/secrets/ray.token (once, mode 0600) and print its path, for "
        "ray-cluster.yaml and `ray job submit`",
    )
    bench = sub.add_parser("bench", help="benchmarks: `raychat bench SUITE [...]`")
    bench.add_argument("suite", choices=BENCH_SUITES)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.profile:
        overrides["profile"] = args.profile
    try:
        settings = load_settings(args.config, **overrides)
        if getattr(args, "ingress", None):
            settings.ingress.kind = args.ingress
        return _run(args, settings)
    except (SettingsError, ModelStoreError, ProcessError) as exc:
        print(f"raychat: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: object) -> int:
    from cluster import local, model_store
    from cluster.settings import RaychatSettings

    assert isinstance(settings, RaychatSettings)
    local.export_environment(settings)
    command = args.command
    if command == "config":
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    elif command == "prepare-model":
        print(
            model_store.resolve_model(
                settings.llm.model_source,
                settings.data_dir / "models",
                expected_sha256=settings.llm.model_sha256,
                weights=settings.llm.weights,
            )
        )
    elif command == "up":
        settings = _running_settings(args, settings)
        url = local.up(settings)
        print_welcome(settings, url)
    elif command == "keys":
        from cluster import keys

        return keys.command(settings, args)
    elif command == "down":
        stopped = local.down(settings)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif command == "join":
        from cluster import nodes

        resources = nodes.parse_resources(args.resources) if args.resources else None
        pid = nodes.join(
            settings,
            name=args.name,
            num_gpus=args.num_gpus,
            num_cpus=args.num_cpus,
            address=args.address,
            resources=resources,
        )
        print(json.dumps({"node": args.name, "pid": pid, "log": str(nodes.log_file(settings, args.name))}))
    elif command == "leave":
        from cluster import nodes

        print(f"{args.name}: " + ("stopped" if nodes.leave(settings, args.name) else "was not running"))
    elif command == "kb":
        from cluster import kb

        local.connect(settings)
        if args.kb_command == "ingest":
            summary = kb.ingest_paths(settings, args.name, args.paths)
            print(json.dumps(summary))
            return 0 if summary["failed"] == 0 else 1
        report = kb.sync_once(settings, args.name, args.folder)
        print(
            json.dumps(
                {
                    "added": report.added,
                    "modified": report.modified,
                    "deleted": report.deleted,
                    "unchanged": report.unchanged,
                    "failed": report.failed,
                },
                ensure_ascii=False,
            )
        )
        return 0 if not report.failed else 1
    elif command == "batch":
        from cluster.jobs import batch_chat

        argv = ["--input", args.input, "--output", args.output]
        for flag, value in (
            ("--knowledge-base", args.knowledge_base),
            ("--engine", args.engine),
            ("--limit", args.limit),
            ("--batch-size", args.batch_size),
            ("--concurrency", args.concurrency),
        ):
            if value is not None:
                argv += [flag, value]
        return batch_chat.main(argv, settings=settings)
    elif command == "firewall":
        from cluster import firewall

        return firewall.command(settings, args.role, load=args.apply, unload=args.remove)
    elif command == "ingress":
        return _ingress(settings, args.action)
    elif command == "ray-token":
        from cluster import planes

        planes.ensure_ray_token(settings)
        print(planes.ray_token_path(settings))
    elif command == "bench":
        import importlib

        suite = importlib.import_module(f"cluster.bench.{args.suite}")
        return suite.main(args.bench_args, settings)
    elif command == "loadtest":
        from cluster import loadtest

        return loadtest.run(
            settings,
            tier=args.tier,
            ingress=args.target,
            users=args.users,
            duration=args.duration,
            user_classes=args.user_classes,
        )
    elif command == "status":
        from cluster.upgrade.blue_green import colours_status

        report = local.status(settings)
        report["colours"] = colours_status(settings)
        print(json.dumps(report, indent=2, default=str))
    elif command in ("upgrade", "rollback"):
        return _upgrade(args, settings)
    return 0


def _running_settings(args: argparse.Namespace, settings: Any) -> Any:
    """After `raychat upgrade --config NEW.yaml`, NEW.yaml is what runs: without an explicit --config,
    `up` and the next upgrade start from it (not from defaults that would redeploy the old version)."""
    from cluster.ingress import routing

    live_file = routing.load(settings).live.config_file
    if args.config is None and live_file and Path(live_file).is_file():
        print(f"[raychat] settings of the running version: {live_file}", file=sys.stderr)
        return load_settings(live_file)
    return settings


def _upgrade(args: argparse.Namespace, settings: Any) -> int:
    from cluster.ingress import routing
    from cluster.upgrade import blue_green, rolling
    from cluster.upgrade.compat import UpgradeRefused
    from cluster.upgrade.steps import RolledBack

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # a stopped upgrade (SIGTERM) rolls back as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if args.command == "rollback":
            rolling_now = routing.load(settings).rolling
            print(rolling.request_rollback(settings) if rolling_now else blue_green.rollback(settings))
            return 0
        settings = _running_settings(args, settings)
        new = load_settings(args.new_config)
        config_file = str(Path(args.new_config).resolve())
        if args.strategy == "rolling":
            if args.reindex:
                raise UpgradeRefused("--reindex needs the blue-green strategy (new tables beside the old)")
            report = rolling.upgrade(settings, new, config_file=config_file)
        else:
            report = blue_green.upgrade(settings, new, config_file=config_file, reindex=args.reindex)
    except UpgradeRefused as exc:
        print(f"raychat: upgrade refused: {exc}", file=sys.stderr)
        return 3
    except RolledBack as exc:
        print(f"raychat: rolled back: {exc}", file=sys.stderr)
        return 4
    summary = {
        "strategy": report.strategy,
        "outcome": report.outcome,
        "phases": report.phases,
        "notes": report.notes,
    }
    if report.reindex:
        summary["reindex"] = report.reindex
    print(json.dumps(summary, indent=2))
    return 0


def _ingress(settings: Any, action: str) -> int:
    from cluster import local, planes

    if action == "start":
        for line in planes.prepare_edge(settings):
            print(f"[raychat] {line}")
    for module in local.ingress_modules(settings):
        changed = module.start(settings) if action == "start" else module.stop(settings)
        done = {"start": ("started", "already running"), "stop": ("stopped", "was not running")}[action]
        print(f"{module.NAME}: {done[0] if changed else done[1]}")
    return 0


def print_welcome(settings: Any, url: str) -> None:
    """The URL, where the admin key is, and snippets that work as they are."""
    from cluster import local

    model = settings.llm.model_id
    print(f"\nraychat is up: {url}/v1  (OpenAI-compatible; model '{model}')\n")
    if settings.console.enabled:
        print(f"Web console: {url}/  (sign in with an API key or your organisation's token)\n")
    https = settings.https_url()
    if https is not None:
        from cluster import tls

        files = tls.paths(settings)
        if settings.tls.site_cert is not None or not files.ca_cert.exists():
            print(f"HTTPS: {https}/v1 (the site's certificate)\n")
        else:
            print(f"HTTPS: {https}/v1, with a certificate from raychat's private CA. To trust it:")
            print(tls.trust_hint(files, https) + "\n")
    report = local.last_bootstrap
    body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
    if report is None:
        print(
            "WARNING: authentication is OFF (auth.enabled: false): anyone who reaches this port can do "
            "anything. Use this only on a laptop.\n"
        )
        print(f"curl {url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'")
        return
    if report.admin_key_created:
        print(f"Your admin key (shown once here; kept in {report.admin_key_file}, mode 0600):\n")
        print(f"    {report.admin_key_created}\n")
    else:
        print(f"The admin key is in {report.admin_key_file} (mode 0600).\n")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    print(f"export OPENAI_API_KEY=$(cat {report.admin_key_file})\n")
    print(
        f'curl {url}/v1/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" '
        f"-H 'Content-Type: application/json' -d '{body}'\n"
    )
    print(
        'python -c "from openai import OpenAI; '
        f"c = OpenAI(base_url='{url}/v1'); "
        f"print(c.chat.completions.create(model='{model}', "
        "messages=[{'role': 'user', 'content': 'Hello!'}]).choices[0].message.content)\""
    )
    print("\nKeys for people and services: raychat keys create --name NAME --role user --kb KB")


if __name__ == "__main__":
    sys.exit(main())
