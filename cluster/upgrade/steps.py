"""What both upgrade strategies (`blue_green.py`, `rolling.py`) are made of: the report with each phase's
time, the routing record applied to the proxies, deleting an app, and the room check before anything
starts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster import local, model_store
from cluster.ingress import routing
from cluster.ingress.routing import Colour, Routing
from cluster.settings import RaychatSettings
from cluster.upgrade.compat import UpgradeRefused
from deployments.config import AppConfig

Say = Callable[[str], None]


class RolledBack(RuntimeError):
    """The new version was taken out again; the message says why. The running version serves every
    request."""


@dataclass
class UpgradeReport:
    strategy: str = "blue-green"
    outcome: str = "running"
    blue: dict[str, Any] = field(default_factory=dict)
    green: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    holds: list[dict[str, Any]] = field(default_factory=list)  # per judged window: both versions' counts
    reindex: dict[str, Any] = field(default_factory=dict)

    def save(self, settings: RaychatSettings) -> Path:
        path = settings.logs_dir / f"upgrade-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


@contextmanager
def phase(report: UpgradeReport, name: str, say: Say) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        report.phases[name] = round(time.monotonic() - started, 2)
        say(f"{name}: {report.phases[name]:.1f}s")


def running_colour(settings: RaychatSettings) -> Colour:
    """The live colour an upgrade starts from; UpgradeRefused while another upgrade runs or the app is
    not running."""
    local.connect(settings)
    colours = routing.load(settings)
    if colours.candidate is not None or colours.rolling:
        raise UpgradeRefused("an upgrade is under way; let it finish or `raychat rollback`")
    live = colours.live
    if local.app_status(settings, live.app) != "RUNNING":
        raise UpgradeRefused(f"the running app '{live.app}' is not RUNNING; `raychat up` first")
    return live


def beside(
    settings: RaychatSettings, live: Colour, config: AppConfig, config_file: str | None = None
) -> Colour:
    """A new colour for `config` in the app slot `live` does not hold."""
    app = routing.other_slot(settings, live.app)
    return Colour(
        app=app,
        prefix=routing.prefix_of(settings, app),
        version=config.version,
        model_id=config.llm.model_id,
        config_file=config_file,
        store_dir=str(config.store_dir),
    )


def model_path(settings: RaychatSettings) -> Path:
    """The settings' model, prepared under the data dir if it is not yet (checksummed)."""
    llm = settings.llm
    return model_store.resolve_model(
        llm.model_source, settings.data_dir / "models", expected_sha256=llm.model_sha256, weights=llm.weights
    )


def apply_routing(settings: RaychatSettings, colours: Routing) -> None:
    """The record, then every running proxy reloaded on it (gracefully: nothing in flight is cut)."""
    routing.save(settings, colours)
    for module in local.ingress_modules(settings):
        module.reload(settings)


def delete_app(app: str) -> None:
    from ray import serve

    serve.delete(app, _blocking=True)


def needs(settings: RaychatSettings, *, one_each: bool = False) -> dict[str, float]:
    """Ray resources a whole copy of the app reserves at its minimum size; with `one_each`, one replica of
    each deployment (what a rolling upgrade adds at a time, and its one-replica canary)."""
    llm, gw, kn = settings.llm, settings.gateway, settings.knowledge
    replicas = 1 if one_each else max(llm.min_replicas, llm.initial_replicas or 0, 1)
    gateways = 1 if one_each else gw.num_replicas
    embedders = 1 if one_each else kn.embedding_replicas
    engine_cpus = 0.0 if llm.accelerator == "gpu" else llm.engine_num_cpus * llm.tensor_parallel_size
    result = {
        "CPU": replicas * (llm.replica_num_cpus + engine_cpus)
        + gateways * gw.num_cpus
        + embedders * 0.25
        + 0.25  # the retriever
    }
    gpus = llm.tensor_parallel_size if llm.accelerator == "gpu" else 0
    gpus += int(llm.engine_bundle_resources.get("GPU", 0)) * llm.tensor_parallel_size
    if gpus:
        result["GPU"] = float(replicas * gpus)
    return result


def check_room(blue: RaychatSettings, green: RaychatSettings, *, rolling: bool = False) -> None:
    """UpgradeRefused unless Ray has the free capacity the strategy needs beside the running version."""
    import ray

    free = ray.available_resources()
    wanted = needs(green, one_each=rolling)
    short = {k: (v, free.get(k, 0.0)) for k, v in wanted.items() if free.get(k, 0.0) + 1e-9 < v}
    if short:
        detail = ", ".join(f"{k}: needs {need:g}, {have:g} free" for k, (need, have) in short.items())
        if rolling:
            raise UpgradeRefused(
                f"no room for one more replica of each deployment ({detail}): a rolling upgrade starts "
                "a new replica before it stops an old one. Free capacity (another node: `raychat join`)"
            )
        raise UpgradeRefused(
            f"no room for a second copy beside the running one ({detail}). Free capacity (another node: "
            "`raychat join`), lower the new settings' llm.min_replicas, or use `--strategy rolling` "
            "(room for one replica of each deployment)"
        )
    if blue.serve.direct_ingress:
        ports = blue.gateway.num_replicas + (1 if rolling else green.gateway.num_replicas)
        if ports > blue.serve.direct_ingress_ports:
            raise UpgradeRefused(
                f"the running gateways and the new ones starting beside them need {ports} direct-ingress "
                f"ports; serve.direct_ingress_ports is {blue.serve.direct_ingress_ports}"
            )
