"""The root settings: each layer's section plus the cluster-level fields, from YAML and env.

Precedence, highest first: keyword overrides, `RAYCHAT_*` environment variables (nested with `__`, e.g.
`RAYCHAT_LLM__MAX_REPLICAS=4`), the YAML file (`raychat.yaml`, or the path in `RAYCHAT_CONFIG`), the
profile (`cluster/profiles/<profile>.yaml`), then the field defaults, which run on a 2-core CPU machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from cluster.plane_settings import FirewallSettings, TLSSettings, is_loopback
from cluster.upgrade.settings import UpgradeSettings
from deployments.config import (
    AppConfig,
    AuthSettings,
    CacheSettings,
    ConsoleSettings,
    GatewaySettings,
    LLMSettings,
    MetricsSettings,
    PlacementSettings,
    RedisSettings,
    RolloutSettings,
    Section,
    SessionSettings,
)
from knowledge.config import KnowledgeSettings

PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILES = ("cpu", "gpu", "tier1", "tier2", "tier3")
DEFAULT_CONFIG_FILE = "raychat.yaml"
CONFIG_ENV = "RAYCHAT_CONFIG"


class RaySettings(Section):
    """The Ray cluster: a local head that `raychat up` starts, or an existing one at `address`."""

    address: str | None = Field(None, description="existing cluster (host:port); None starts a local head")
    host: str = Field("127.0.0.1", description="the local head binds here")
    port: int = Field(6380, ge=1, le=65535, description="GCS port (6379 is left to Redis)")
    dashboard_port: int = Field(8265, ge=1, le=65535)
    num_cpus: float | None = Field(
        8, gt=0, description="logical CPUs the head offers; replicas reserve fractions of them"
    )
    num_gpus: int = Field(0, ge=0, description="GPUs the head declares")
    object_store_memory_mb: int = Field(1024, ge=75)
    namespace: str = "raychat"
    start_timeout_s: float = Field(900, gt=0, description="how long `up` waits for the app to be ready")
    token_auth: bool = Field(
        True,
        description="RAY_AUTH_MODE=token: GCS, the dashboard and the Jobs API refuse callers without the "
        "token in <data_dir>/secrets/ray.token",
    )
    use_tls: bool | None = Field(
        None,
        description="RAY_USE_TLS: Ray's gRPC channels (Serve's replica-to-replica calls included) over"
        " mutual TLS with certificates from raychat's CA; None: on whenever `host` is not loopback",
    )

    @property
    def tls_on(self) -> bool:
        return self.use_tls if self.use_tls is not None else not is_loopback(self.host)


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = Field(
        "raychat",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the Serve application `up` deploys on route '/'; an upgrade's other colour is "
        "'<app_name>-2' on '/<app_name>-2'",
    )
    release: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._+-]{1,64}$",
        description="the version label responses carry as X-Raychat-Version; None: a digest of the code "
        "and the app's settings",
    )
    proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly",
        description="where Serve runs its HTTP proxy; with EveryNode list every node's proxy in "
        "ingress.upstreams (every proxy binds the same port, so one host runs only HeadOnly)",
    )
    # Ray Serve's documented request-path tunings (the parts of RAY_SERVE_THROUGHPUT_OPTIMIZED that keep
    # the HTTP proxy): gRPC between deployments, user code on the replica's event loop, buffered
    # request-path logs. Measured here: fewer CPU cycles per streamed token on a 2-core host.
    throughput_tuning: bool = True
    max_message_bytes: int = Field(
        512 * 1024 * 1024,
        ge=4 * 1024 * 1024,
        description="the largest call between deployments over gRPC (throughput_tuning). A knowledge write "
        "carries a whole document's chunks and vectors in one commit (about 4 KB a chunk): gRPC's own 4 "
        "MiB cut off documents of more than about 1,000 chunks",
    )
    direct_ingress: bool = Field(
        True,
        description="each Gateway replica serves HTTP(S) itself (Serve's direct ingress) on a port of "
        "`direct_ingress_first_port`.., and the proxies in front send requests straight to it; the Serve "
        "proxy on `port` stays as their fallback. Off: every request and streamed chunk also crosses the "
        "Serve proxy actor (two more Ray hops)",
    )
    direct_ingress_first_port: int = Field(30000, ge=1024, le=65000)
    direct_ingress_ports: int = Field(
        8,
        ge=1,
        le=64,
        description="ports the Gateway replicas take from `direct_ingress_first_port` on; at least twice "
        "gateway.num_replicas, so a rolling update's new replicas find a port the proxies already list",
    )

    direct_ingress_drain_s: float = Field(
        2,
        gt=0,
        description="a Gateway replica being stopped keeps serving at least this long (and until its "
        "requests finish); Serve's default 30 s is for load balancers that learn late, while Nginx and "
        "Traefik here move to the next port as soon as one refuses",
    )

    def direct_ingress_range(self) -> range:
        return range(
            self.direct_ingress_first_port, self.direct_ingress_first_port + self.direct_ingress_ports
        )

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.throughput_tuning:
            env |= {
                "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
                "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
                "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
                "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(self.max_message_bytes),
            }
        ports = self.direct_ingress_range()
        env |= {
            "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1" if self.direct_ingress else "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(ports.start),
            # Serve's maximum is exclusive.
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(ports.stop),
            # A replaced replica takes the port its predecessor freed, one the proxies list, at once.
            "RAY_SERVE_PORT_QUARANTINE_S": "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{self.direct_ingress_drain_s:g}",
        }
        return env


class BatchSettings(Section):
    """Batch jobs (`cluster/jobs/batch_chat.py`): which engine answers a job, and how hard it may push."""

    engine: Literal["auto", "serve", "dedicated"] = Field(
        "auto",
        description="serve: the running LLM deployment; dedicated: an engine of the job's own (Ray Data); "
        "auto: dedicated from dedicated_min_rows rows when there is room for it, else serve",
    )
    dedicated_min_rows: int = Field(
        500,
        ge=1,
        description="rows from which a dedicated engine pays for its start (a minute or more on CPU)",
    )
    serve_max_in_flight: int = Field(
        4, ge=1, description="a job's requests in flight at the running deployment: online users go first"
    )
    dedicated_batch_size: int = Field(64, ge=1, description="rows per batch of the dedicated engine")
    ingest_dedicated_min_files: int = Field(
        2000,
        ge=1,
        description="an ingestion job (cluster/jobs/ingest.py) of this many files gets an embedder of its "
        "own when there is room, and the Embedding deployment stays free for queries",
    )
    dedicated_embedder_num_cpus: float = Field(1, gt=0, description="the CPUs a dedicated embedder takes")
    chunk_rows: int = Field(
        20_000,
        ge=1,
        description="input rows read and answered at a time: a job's memory is bounded by this, not by its "
        "file (a dedicated engine starts once per chunk)",
    )
    dedicated_max_num_seqs: int = Field(
        128, ge=1, description="the dedicated engine's max_num_seqs: offline work wants large batches"
    )


class IngressSettings(Section):
    """Reverse proxies in front of the Serve HTTP proxy."""

    kind: Literal["nginx", "traefik", "both", "none"] = "nginx"
    host: str = "127.0.0.1"
    nginx_port: int = Field(8080, ge=1, le=65535, description="plain HTTP; redirects to HTTPS off loopback")
    traefik_port: int = Field(8081, ge=1, le=65535, description="plain HTTP; redirects to HTTPS off loopback")
    nginx_https_port: int = Field(8443, ge=1, le=65535)
    traefik_https_port: int = Field(8444, ge=1, le=65535)
    upstreams: list[str] = Field(default_factory=list, description="Serve proxies host:port; [] = serve's")
    read_timeout_s: float = Field(600, gt=0, description="long generations stream for minutes")
    connect_timeout_s: float = Field(5, gt=0)
    health_interval_s: float = Field(2, gt=0, description="Traefik's active check of each Serve proxy")
    max_fails: int = Field(2, ge=1, description="failures before a proxy marks a Serve proxy down")
    fail_timeout_s: float = Field(5, gt=0, description="how long a failed Serve proxy stays out")
    keepalive_connections: int = Field(128, ge=1)
    worker_processes: int = Field(1, ge=1)
    worker_connections: int = Field(4096, ge=16)


class RaychatSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAYCHAT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: Literal["cpu", "gpu", "tier1", "tier2", "tier3"] = "cpu"
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    firewall: FirewallSettings = Field(default_factory=FirewallSettings)
    upgrade: UpgradeSettings = Field(default_factory=UpgradeSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _source_roots_absolute(self) -> RaychatSettings:
        """Relative `knowledge.source_roots` and `embedding_cache_dir` are relative to the data dir: made
        absolute here, so the Retriever, the folder-sync actor and the CLI all get the same ones wherever
        they run."""
        roots = [root.expanduser() for root in self.knowledge.source_roots]
        roots = [root if root.is_absolute() else self.data_dir / root for root in roots]
        cache = self.knowledge.embedding_cache_dir.expanduser()
        cache = cache if cache.is_absolute() else self.data_dir / cache
        # A copy: a KnowledgeSettings handed in by the caller is not changed under its feet.
        self.knowledge = self.knowledge.model_copy(
            update={"source_roots": roots, "embedding_cache_dir": cache}
        )
        return self

    @model_validator(mode="after")
    def _direct_ingress_room(self) -> RaychatSettings:
        if self.serve.direct_ingress and self.serve.direct_ingress_ports < 2 * self.gateway.num_replicas:
            raise ValueError(
                f"serve.direct_ingress_ports ({self.serve.direct_ingress_ports}) must be at least twice "
                f"gateway.num_replicas ({self.gateway.num_replicas}): a rolling update starts new replicas "
                "before it stops old ones"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _load_state["yaml"] is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_load_state["yaml"]))
        sources.append(_DictSource(settings_cls, _load_state["profile"]))
        return tuple(sources)

    # --- derived values ---------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ray_address(self) -> str:
        return self.ray.address or f"{self.ray.host}:{self.ray.port}"

    @property
    def serve_url(self) -> str:
        # With mTLS on, Serve's proxy speaks only HTTPS and wants the ingress's client certificate.
        scheme = "https" if self.tls.enabled and self.tls.serve_mtls else "http"
        return f"{scheme}://{self.serve.host}:{self.serve.port}"

    def public_url(self) -> str:
        """The URL users are given: the first proxy in front, else Serve itself. Plain HTTP on loopback
        (the quick start); HTTPS as soon as the ingress faces a network."""
        ing = self.ingress
        if ing.kind == "none":
            return self.serve_url
        https = self.https_url()
        if https is not None and not is_loopback(ing.host):
            return https
        return f"http://{ing.host}:{ing.nginx_port if ing.kind in ('nginx', 'both') else ing.traefik_port}"

    def https_url(self) -> str | None:
        """The ingress's HTTPS URL, when TLS is on."""
        ing = self.ingress
        if not self.tls.enabled or ing.kind == "none":
            return None
        nginx = ing.kind in ("nginx", "both")
        return f"https://{ing.host}:{ing.nginx_https_port if nginx else ing.traefik_https_port}"

    def app_config(self, model_path: Path) -> AppConfig:
        return AppConfig(
            llm=self.llm,
            gateway=self.gateway,
            console=self.console,
            knowledge=self.knowledge,
            redis=self.redis,
            sessions=self.sessions,
            cache=self.cache,
            metrics=self.metrics,
            placement=self.placement,
            rollout=self.rollout,
            auth=self.auth,
            model_path=model_path,
            data_dir=self.data_dir,
        )


class _DictSource(PydanticBaseSettingsSource):
    """A fixed mapping as a settings source (the profile's values)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


_load_state: dict[str, Any] = {"yaml": None, "profile": {}}


class SettingsError(ValueError):
    """Settings that cannot start the service; the message names each bad field."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping")
    return data


def profile_values(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise SettingsError(f"profile: {name!r} is not one of {', '.join(PROFILES)}")
    return _read_yaml(PROFILES_DIR / f"{name}.yaml")


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The YAML file in use: explicit path, $RAYCHAT_CONFIG, or ./raychat.yaml if it exists."""
    if explicit is not None:
        path = Path(explicit)
    elif os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    else:
        path = Path(DEFAULT_CONFIG_FILE)
        if not path.exists():
            return None
    if not path.exists():
        raise SettingsError(f"config file {path} does not exist")
    return path


def load_settings(config: str | Path | None = None, **overrides: Any) -> RaychatSettings:
    """Load and validate the settings once at start; errors name the bad field and its env variable."""
    path = config_path(config)
    file_values = _read_yaml(path) if path else {}
    profile = (
        overrides.get("profile") or os.environ.get("RAYCHAT_PROFILE") or file_values.get("profile") or "cpu"
    )
    _load_state.update(yaml=path, profile=profile_values(str(profile)))
    try:
        return RaychatSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, path)) from exc
    finally:
        _load_state.update(yaml=None, profile={})


def describe_errors(exc: ValidationError, path: Path | None) -> str:
    lines = [f"invalid settings ({path or 'no config file'}, RAYCHAT_* env):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        env = "RAYCHAT_" + "__".join(str(p).upper() for p in err["loc"])
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"  {field}: {err['msg']}{got}  [env {env}]")
    return "\n".join(lines)
