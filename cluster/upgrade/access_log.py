"""What clients saw, by the version that answered: the proxies' access logs (Nginx's `raychat` format,
Traefik's JSON) read from a mark on. A rolling upgrade is judged on these, not on the app's metrics: the
replicas that count (the Metrics deployment's too) are replaced under it, so their counters start over,
while the proxies' logs carry every answer with its X-Raychat-Version.

An API request (`/v1/...`) answered 5xx is an error; one no replica answered (no version: the proxy's
own 502-504) is counted against the new version, whose arrival is the change. Latency is the time the
proxy took for a chat or completion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cluster.settings import RaychatSettings
from cluster.upgrade.health import Sample

_NGINX = re.compile(
    r'"(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) \S+ rt=(?P<rt>[\d.]+) '
    r".*version=(?P<version>\S*)$"
)
_GENERATIONS = ("/v1/chat/completions", "/v1/completions")


@dataclass
class Seen:
    """The API requests one version answered."""

    requests: int = 0
    errors: int = 0
    seconds: list[float] = field(default_factory=list)  # chats and completions

    def add(self, path: str, status: int, seconds: float) -> None:
        self.requests += 1
        self.errors += status >= 500
        if path.split("?", 1)[0] in _GENERATIONS:
            self.seconds.append(seconds)

    def sample(self) -> Sample:
        """As a metrics sample: the durations as a cumulative histogram, each its own bucket bound."""
        ordered = sorted(self.seconds)
        latency = {bound: float(i + 1) for i, bound in enumerate(ordered)}
        latency[float("inf")] = float(len(ordered))
        return Sample(requests=self.requests, errors=self.errors, latency=latency)


def parse_nginx(line: str) -> tuple[str, int, float, str] | None:
    """(path, status, seconds, version) of one `raychat`-format line; None for another line."""
    match = _NGINX.search(line.strip())
    if match is None:
        return None
    version = match["version"]
    return match["path"], int(match["status"]), float(match["rt"]), "" if version == "-" else version


def parse_traefik(line: str) -> tuple[str, int, float, str] | None:
    try:
        entry = json.loads(line)
        return (
            str(entry["RequestPath"]),
            int(entry["DownstreamStatus"]),
            float(entry["Duration"]) / 1e9,
            str(entry.get("downstream_X-Raychat-Version", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


class AccessLogs:
    """Both proxies' access logs from the moment this was made (their sizes then)."""

    def __init__(self, settings: RaychatSettings) -> None:
        logs = settings.logs_dir
        self._logs = ((logs / "nginx-access.log", parse_nginx), (logs / "traefik-access.log", parse_traefik))
        self._marks = [self._size(path) for path, _ in self._logs]

    @staticmethod
    def _size(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def by_version(self) -> dict[str, Seen]:
        """Every API request logged since the mark, by the version that answered ('' for none)."""
        seen: dict[str, Seen] = {}
        for (path, parse), mark in zip(self._logs, self._marks, strict=True):
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(mark)
                text = log.read().decode(errors="replace")
            for line in text.splitlines():
                parsed = parse(line)
                if parsed is None or not parsed[0].startswith("/v1/"):
                    continue
                request_path, status, seconds, version = parsed
                seen.setdefault(version, Seen()).add(request_path, status, seconds)
        return seen

    def old_and_new(self, old: str, new: str) -> tuple[Sample, Sample]:
        """The old version's answers, and the new version's with the refusals no replica answered."""
        seen = self.by_version()
        new_seen, unanswered = seen.get(new, Seen()), seen.get("", Seen())
        new_seen.requests += unanswered.requests
        new_seen.errors += unanswered.errors
        return seen.get(old, Seen()).sample(), new_seen.sample()
