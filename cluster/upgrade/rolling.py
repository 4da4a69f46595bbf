"""`raychat upgrade --strategy rolling`: when there is no room for a whole second copy, the running app's
replicas are replaced in place, one new replica started before one old replica stops (Serve's surge
rollout, `rollout.max_surge_percent`), until all are new.

1. Checks (`compat.plan`): as for blue-green, less what needs two whole colours (a new embedding, a new
   served model name); then room for one more replica of each deployment.
2. A canary, the new version with one replica of each deployment in the other app slot, passes the smoke
   test straight at it and is deleted: a new version that fails never gets a client request.
3. The proxies go through Serve's proxy (it knows which Gateway replicas run, old or new), and the new
   version is deployed into the running app. Until every replica is new, and for `upgrade.hold_s` after,
   what clients saw is judged every `upgrade.check_interval_s` on the proxies' access logs, by version
   (`access_log.py`); beyond the thresholds, or on `raychat rollback`, Ctrl-C or SIGTERM, the previous
   settings are rolled out the same way.

What it costs against blue-green: old and new replicas answer side by side during the rollout (no
weighted steps, no second colour to fall back to at once), and a rollback is another rollout.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from cluster import local
from cluster.ingress import routing
from cluster.ingress.routing import Colour, Routing
from cluster.settings import RaychatSettings
from cluster.upgrade import compat, health, smoke
from cluster.upgrade.access_log import AccessLogs
from cluster.upgrade.compat import UpgradeRefused
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

ROLLBACK_REQUEST = "rollback-requested"


def canary_settings(settings: RaychatSettings) -> RaychatSettings:
    """The new version at one replica of each deployment: what the smoke test needs, and no more room than
    the rollout itself takes."""
    llm = settings.llm.model_copy(update={"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1})
    gateway = settings.gateway.model_copy(update={"num_replicas": 1})
    knowledge = settings.knowledge.model_copy(update={"embedding_replicas": 1})
    return settings.model_copy(update={"llm": llm, "gateway": gateway, "knowledge": knowledge})


def _canary(settings: RaychatSettings, blue: Colour, model: Path, report: UpgradeReport, say: Say) -> None:
    """Starts the canary beside the running app, smoke-tests it, deletes it; RolledBack if it fails."""
    canary_cfg = canary_settings(settings)
    config, _ = local.app_config(canary_cfg, model)
    canary = beside(settings, blue, config)
    # Its gateway takes a direct-ingress port too: the proxies go through Serve's proxy, by prefix.
    apply_routing(settings, Routing(live=blue, candidate=canary, candidate_weight=0))
    try:
        with phase(report, "canary ready", say):
            local.run_app(canary_cfg, config, canary.app, canary.prefix)
        with phase(report, "smoke test", say):
            smoke.run(canary_cfg, canary, say)
    except Exception as exc:
        raise RolledBack(f"the canary failed: {exc}") from exc
    finally:
        with phase(report, "canary deleted", say):
            delete_app(canary.app)
            apply_routing(settings, Routing(live=blue, rolling=True))


def _judge(
    settings: RaychatSettings,
    logs: AccessLogs,
    old: str,
    new: str,
    *,
    until: float | None = None,
    deploying: local.Deploying | None = None,
    report: UpgradeReport,
    say: Say,
) -> None:
    """Compares what clients got from the new version with the old one's answers since the rollout
    began, every check interval, while `deploying` runs or until `until`; RolledBack beyond the
    thresholds or when `raychat rollback` asked for it."""
    rules = settings.upgrade
    request = settings.run_dir / ROLLBACK_REQUEST
    last_say = time.monotonic()
    give_up = last_say + settings.ray.start_timeout_s * 2  # each deployment's replicas in turn
    while True:
        time.sleep(rules.check_interval_s)
        if request.exists():
            raise RolledBack("rolled back by the operator (`raychat rollback`)")
        old_sample, new_sample = logs.old_and_new(old, new)
        reason = health.verdict(old_sample, new_sample, rules, names=("the new version", "the old one"))
        if reason is not None:
            raise RolledBack(reason)
        if deploying is not None and time.monotonic() > give_up:
            raise RolledBack(f"the rollout did not finish in {settings.ray.start_timeout_s:.0f}s")
        finished = deploying.done() if deploying is not None else time.monotonic() >= (until or 0)
        if time.monotonic() - last_say >= 10 or finished:
            last_say = time.monotonic()
            summary = local.deployment_summary(settings, routing.live_app(settings))
            say(
                f"  old {old_sample.requests} answers ({old_sample.errors} 5xx), new {new_sample.requests} "
                f"({new_sample.errors} 5xx); {summary}"
            )
        if finished:
            report.holds.append(
                {
                    # counts since the rollout began
                    "window": "rollout" if deploying is not None else "rollout and hold",
                    "old": old_sample.summary(),
                    "new": new_sample.summary(),
                }
            )
            return


def upgrade(
    blue_settings: RaychatSettings,
    new_settings: RaychatSettings,
    *,
    config_file: str | None = None,
    say: Say = local.say,
) -> UpgradeReport:
    """Rolling upgrade of the running app to `new_settings`; the report says what happened. Raises
    UpgradeRefused before anything starts, and RolledBack (after the previous settings are back) when the
    new version failed."""
    report = UpgradeReport(strategy="rolling")
    blue = running_colour(blue_settings)
    plan = compat.plan(blue_settings, new_settings, rolling=True)
    green_settings = plan.green
    check_room(blue_settings, green_settings, rolling=True)
    green_model = model_path(green_settings)
    note = compat.window_note(blue_settings, green_settings, green_model)
    for line in [*plan.notes, *([note] if note else [])]:
        report.notes.append(line)
        say(line)
    config, digest = local.app_config(green_settings, green_model)
    if config.version == blue.version:
        raise UpgradeRefused(
            f"the new settings and code are the running version ({blue.version}): nothing to upgrade"
        )
    green = blue.model_copy(
        update={"version": config.version, "config_file": config_file, "store_dir": str(config.store_dir)}
    )
    report.blue, report.green = blue.model_dump(), green.model_dump()
    say(f"rolling upgrade of '{blue.app}': {blue.version} -> {green.version}, one replica at a time")
    (blue_settings.run_dir / ROLLBACK_REQUEST).unlink(missing_ok=True)
    started = time.monotonic()
    rolled_out = False
    try:
        _canary(green_settings, blue, green_model, report, say)
        logs = AccessLogs(blue_settings)
        judge = partial(_judge, green_settings, logs, blue.version, green.version, report=report, say=say)
        with phase(report, "rollout", say):
            rolled_out = True
            deploying = local.start_app(green_settings, config, blue.app, blue.prefix)
            judge(deploying=deploying)
            deploying.raise_failure()
        with phase(report, "hold", say):
            judge(until=time.monotonic() + green_settings.upgrade.hold_s)
    except (Exception, KeyboardInterrupt) as exc:  # whatever failed, the previous settings come back
        reason = str(exc) or type(exc).__name__
        say(f"the new version failed: {reason}; rolling back to {blue.version}")
        if rolled_out:
            with phase(report, "rollback", say):
                blue_config, _ = local.app_config(blue_settings, model_path(blue_settings))
                local.run_app(blue_settings, blue_config, blue.app, blue.prefix)
        apply_routing(blue_settings, Routing(live=blue))
        (blue_settings.run_dir / ROLLBACK_REQUEST).unlink(missing_ok=True)
        report.outcome = f"rolled back: {reason}"
        report.phases["total"] = round(time.monotonic() - started, 2)
        say(f"report: {report.save(blue_settings)}")
        raise RolledBack(reason) from exc
    apply_routing(blue_settings, Routing(live=green))
    local.record_app(green_settings, digest)
    local.follow_folders(green_settings, restart=True)
    report.outcome = "upgraded"
    report.phases["total"] = round(time.monotonic() - started, 2)
    say(f"report: {report.save(blue_settings)}")
    return report


def request_rollback(settings: RaychatSettings) -> str:
    """`raychat rollback` during a rolling upgrade: the upgrade sees the request at its next check and
    rolls the previous settings out again."""
    (settings.run_dir / ROLLBACK_REQUEST).write_text(str(time.time()))
    return (
        "the rolling upgrade rolls back at its next check: the previous version's replicas come back one "
        "at a time (`raychat status` shows the deployments)"
    )
