"""Batch ingestion: files and folders into a knowledge base, through the running app.

    python cluster/jobs/ingest.py NAME PATH... [--engine auto|serve|dedicated] [--config raychat.yaml]

`--engine` chooses the embedder: the running Embedding deployment (`serve`), or one of the job's own
(`dedicated`, `cluster/jobs/dedicated_embedder.py`) so a large ingestion leaves the deployment to online
queries; `auto` takes a dedicated one from `batch.ingest_dedicated_min_files` files when a CPU is free.

Also via `ray submit ray-cluster.yaml cluster/jobs/ingest.py -- NAME PATH...` or `ray job submit
--working-dir . -- python cluster/jobs/ingest.py NAME PATH...` (paths as the head node sees them). The work
is `cluster.kb.ingest_paths`, as `raychat kb ingest` does it: parsing in Ray tasks, batched embedding,
progress on stderr. The last stdout line is the JSON summary; exit 1 only when every file failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file: `cluster` importable

import argparse
import json
from typing import Any

from cluster import local
from cluster.jobs.batch_chat import connect
from cluster.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description="ingest files into a knowledge base")
    parser.add_argument("name", help="knowledge base (created if missing)")
    parser.add_argument("paths", nargs="+", help="files or folders (folders: every supported file inside)")
    parser.add_argument("--config", help="YAML settings file (default: $RAYCHAT_CONFIG or ./raychat.yaml)")
    parser.add_argument("--profile", help="settings profile: cpu, gpu, tier1, tier2, tier3")
    parser.add_argument(
        "--engine",
        choices=("auto", "serve", "dedicated"),
        default="auto",
        help="serve: the Embedding deployment; dedicated: an embedder of its own; auto: by size and room",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides: dict[str, Any] = {"profile": args.profile} if args.profile else {}
        settings = load_settings(args.config, **overrides)
        local.export_environment(settings)  # before ray is imported (cluster.kb imports it)
        connect(settings)
        import ray

        from cluster import kb
        from cluster.jobs import dedicated_embedder, engines
        from deployments.gateway.protocol import APIError

        choice = engines.choose_embedder(
            args.engine, len(kb.collect_files(args.paths)), settings, ray.available_resources
        )
        print(f"embedder: {choice.engine} ({choice.reason})", file=sys.stderr)
        actor, embed = dedicated_embedder.start(settings) if choice.engine == "dedicated" else (None, None)
        try:
            summary = kb.ingest_paths(settings, args.name, args.paths, embed=embed)
        except APIError as exc:  # e.g. an invalid knowledge-base name: nothing was ingested
            print(f"ingest: {exc.message}", file=sys.stderr)
            return 2
        finally:
            if actor is not None:
                ray.kill(actor)
        summary = {**summary, "engine": choice.engine, "engine_reason": choice.reason}
    except (SettingsError, FileNotFoundError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    files = summary["ingested"] + summary["unchanged"] + summary["failed"]
    print(json.dumps({"files": files, **summary}))
    return 1 if files and summary["failed"] == files else 0


if __name__ == "__main__":
    sys.exit(main())
