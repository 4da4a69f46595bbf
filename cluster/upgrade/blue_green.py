"""`raychat upgrade` and `raychat rollback`: a new version (green) takes over from the running one (blue)
without a failed request.

1. Checks (`compat.plan`): same cluster, model aliases, the context window, the embedding model; then room
   for a whole second copy (Ray's free CPUs and GPUs, the direct-ingress ports).
2. The proxies reach blue through Serve's proxy by its route prefix (the replicas' own ports would mix the
   two apps), then green starts as a second Serve app in the other slot (`routing.py`).
3. The smoke test (`smoke.py`) straight at green; a green that fails it is deleted, never seen by a client.
4. Green's share rises step by step (`upgrade.steps`); each step is held and judged against blue on both
   colours' own metrics (`health.py`), and rolled back by itself beyond the thresholds.
5. Blue drains (its generations in flight finish), is deleted, and the proxies go back to the replicas'
   own ports, now green's.

Every phase's time is reported and written to `<data_dir>/logs/upgrade-<time>.json`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from cluster import local
from cluster.ingress import routing
from cluster.ingress.routing import Colour, Routing
from cluster.processes import ProcessError
from cluster.settings import RaychatSettings
from cluster.upgrade import compat, health, smoke
from cluster.upgrade.compat import UpgradeRefused
from cluster.upgrade.reindex import Reindexer, Snapshot
from cluster.upgrade.steps import (
    RolledBack,
    Say,
    UpgradeReport,
    apply_routing,
    beside,
    check_room,
    delete_app,
    model_path,
    phase,
    running_colour,
)
from cluster.waiting import WaitTimeout, wait_until


def _metrics_text(settings: RaychatSettings, colour: Colour) -> str:
    """The colour's own metrics (its Metrics deployment sums its gateway replicas), asked of it directly."""
    with smoke.colour_client(settings, colour, timeout=10) as http:
        response = http.get("/metrics")
    if response.status_code != 200:
        raise ProcessError(f"the metrics of '{colour.app}' answered HTTP {response.status_code}")
    return response.text


def sample(settings: RaychatSettings, colour: Colour) -> health.Sample:
    return health.parse(_metrics_text(settings, colour))


def drain(settings: RaychatSettings, colour: Colour, say: Say) -> bool:
    """Waits until no API request is in flight on `colour` (no new ones arrive: the proxies send it
    nothing any more), for two readings in a row: the gateways report every push interval. False if some
    still run at the timeout (Serve's own graceful shutdown then has them)."""

    quiet = [0]

    def idle() -> bool:
        try:
            busy = sample(settings, colour).in_flight  # streams, uploads, everything
        except (ProcessError, httpx.HTTPError):
            return True  # a colour that cannot answer has nothing in flight to wait for
        quiet[0] = quiet[0] + 1 if busy == 0 else 0
        return quiet[0] >= 2

    try:
        wait_until(
            idle,
            timeout_s=settings.upgrade.drain_timeout_s,
            interval_s=settings.metrics.push_interval_s,
            what=f"'{colour.app}' drains",
            on_tick=lambda s: say(f"  draining '{colour.app}' ({s:.0f}s)"),
            tick_s=5,
        )
    except WaitTimeout:
        return False
    return True


def _hold(
    settings: RaychatSettings, blue: Colour, green: Colour, weight: int, report: UpgradeReport, say: Say
) -> None:
    """Holds one weight step, comparing both colours' counts since its start every check interval."""
    rules = settings.upgrade
    start_blue, start_green = sample(settings, blue), sample(settings, green)
    deadline = time.monotonic() + rules.hold_s
    blue_window = green_window = health.Sample()
    while True:
        time.sleep(min(rules.check_interval_s, max(deadline - time.monotonic(), 0)))
        current = routing.load(settings)
        if current.candidate is None or current.candidate.app != green.app:
            raise RolledBack("rolled back by the operator (`raychat rollback`)")
        blue_window = sample(settings, blue).minus(start_blue)
        green_window = sample(settings, green).minus(start_green)
        reason = health.verdict(blue_window, green_window, rules)
        if reason is not None:
            raise RolledBack(f"at {weight}%: {reason}")
        if time.monotonic() >= deadline:
            break
    entry = {"weight": weight, "blue": blue_window.summary(), "green": green_window.summary()}
    report.holds.append(entry)
    say(f"  held {weight}%: blue {entry['blue']}, green {entry['green']}")


def _take_out(settings: RaychatSettings, live: Colour, candidate: Colour, say: Say) -> None:
    """Every request back to `live`; `candidate`'s requests in flight finish, then it is deleted."""
    apply_routing(settings, Routing(live=live, candidate=candidate, candidate_weight=0))
    drain(settings, candidate, say)
    say(f"deleting '{candidate.app}'")
    delete_app(candidate.app)
    apply_routing(settings, Routing(live=live))


def upgrade(
    blue_settings: RaychatSettings,
    new_settings: RaychatSettings,
    *,
    config_file: str | None = None,
    reindex: bool = False,
    say: Say = local.say,
) -> UpgradeReport:
    """Blue-green upgrade to `new_settings`; the report says what happened. Raises UpgradeRefused before
    anything starts, and RolledBack (after green is gone again) when green failed."""
    report = UpgradeReport()
    blue = running_colour(blue_settings)
    plan = compat.plan(blue_settings, new_settings, reindex=reindex)
    green_settings = plan.green
    report.notes += plan.notes
    for note in plan.notes:
        say(note)
    check_room(blue_settings, green_settings)
    green_model = model_path(green_settings)
    note = compat.window_note(blue_settings, green_settings, green_model)
    if note:
        report.notes.append(note)
        say(note)
    config, digest = local.app_config(green_settings, green_model)
    green = beside(blue_settings, blue, config, config_file)
    if plan.reindex and str(config.store_dir) == blue.store_dir:
        raise UpgradeRefused("--reindex needs the new tables elsewhere: leave knowledge.store_dir unset")
    if green.version == blue.version:
        raise UpgradeRefused(
            f"the new settings and code are the running version ({blue.version}): nothing to upgrade"
        )
    report.blue, report.green = blue.model_dump(), green.model_dump()
    say(f"upgrading '{blue.app}' ({blue.version}) -> '{green.app}' ({green.version})")
    started = time.monotonic()
    writes = plan.reindex  # knowledge-base writes stay with blue while green's tables follow it

    def split(weight: int, writes_to_live: bool = writes) -> Routing:
        return Routing(live=blue, candidate=green, candidate_weight=weight, writes_to_live=writes_to_live)

    reindexer: Reindexer | None = None
    followed: Snapshot = {}
    try:
        with phase(report, "proxies to Serve's proxy", say):
            apply_routing(blue_settings, split(0))
        with phase(report, "green ready", say):
            local.run_app(green_settings, config, green.app, green.prefix)
        if plan.reindex:
            with phase(report, "re-index", say):
                reindexer = Reindexer(blue_settings, blue.app, green_settings, green.app, say)
                followed = reindexer.sync()
        with phase(report, "smoke test", say):
            smoke.run(green_settings, green, say)
        for weight in green_settings.upgrade.steps:
            with phase(report, f"step {weight}%", say):
                if reindexer is not None:
                    followed = reindexer.sync(followed)
                apply_routing(blue_settings, split(weight))
                _hold(green_settings, blue, green, weight, report, say)
        if reindexer is not None:
            with phase(report, "writes to green", say):
                followed = reindexer.sync(followed)
                apply_routing(blue_settings, split(100, writes_to_live=False))
                drain(green_settings, blue, say)  # blue's writes in flight land first
                reindexer.sync(followed)  # what blue took before the move
            report.notes += reindexer.notes
            report.reindex = {
                "documents": reindexer.progress.documents,
                "chunks": reindexer.progress.chunks,
                "deleted": reindexer.progress.deleted,
                "seconds": round(reindexer.progress.seconds, 2),
                "chunks_per_s": round(reindexer.progress.chunks_per_s, 1),
                "passes": reindexer.progress.passes,
            }
    except (Exception, KeyboardInterrupt) as exc:  # whatever failed, green must not stay half in
        reason = str(exc) or type(exc).__name__
        say(f"green failed: {reason}; every request goes to blue again")
        current = routing.load(blue_settings).candidate
        if current is not None and current.app == green.app:  # not already done by `raychat rollback`
            with phase(report, "rollback", say):
                _take_out(blue_settings, blue, green, say)
        report.outcome = f"rolled back: {reason}"
        report.phases["total"] = round(time.monotonic() - started, 2)
        say(f"report: {report.save(blue_settings)}")
        raise RolledBack(reason) from exc
    with phase(report, "blue drained", say):
        drain(green_settings, blue, say)
    with phase(report, "blue deleted", say):
        delete_app(blue.app)
        apply_routing(blue_settings, Routing(live=green))
    local.record_app(green_settings, digest)
    local.follow_folders(green_settings, restart=True)
    if plan.reindex and blue.store_dir:
        note = f"the previous embedding's tables stay in {blue.store_dir}; remove them when done"
        report.notes.append(note)
        say(note)
    report.outcome = "upgraded"
    report.phases["total"] = round(time.monotonic() - started, 2)
    say(f"report: {report.save(blue_settings)}")
    return report


def rollback(settings: RaychatSettings, say: Say = local.say) -> str:
    """Sends every request back to blue while it still exists, and takes green out."""
    local.connect(settings)
    colours = routing.load(settings)
    if colours.candidate is None:
        raise UpgradeRefused(
            f"no upgrade is under way: '{colours.live.app}' ({colours.live.version}) serves alone, and "
            "the previous version is gone (upgrade back to it with its settings)"
        )
    green = colours.candidate
    say(f"rolling back: every request to '{colours.live.app}' ({colours.live.version})")
    _take_out(settings, colours.live, green, say)
    return f"'{green.app}' ({green.version}) taken out; '{colours.live.app}' serves every request"


def colours_status(settings: RaychatSettings) -> dict[str, Any]:
    """Both colours (when an upgrade runs), their versions, apps and shares of requests."""
    colours = routing.load(settings)
    live = colours.live
    status: dict[str, Any] = {
        "blue": {**live.model_dump(), "weight": 100 - colours.candidate_weight},
    }
    if colours.candidate is not None:
        status["green"] = {**colours.candidate.model_dump(), "weight": colours.candidate_weight}
    if colours.rolling:
        status["rolling_upgrade"] = "under way: the deployments' replicas show old and new"
    return status
