"""Deployment settings, read from the environment (``KUNDENWERT_*``) with safe embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kundenwert.errors import ConfigurationError

# requests per second and burst per API key, per role and per worker process; generous for the
# integrations (a CRM side panel shares one sales key among its users; campaign tools send batches)
DEFAULT_RATE_LIMITS: dict[str, tuple[float, float] | None] = {
    "sales": (10_000.0, 20_000.0),
    "campaign": (10_000.0, 20_000.0),
    "marketing": (1_000.0, 2_000.0),
    "data_science": (1_000.0, 2_000.0),
    "admin": (1_000.0, 2_000.0),
}


class Settings(BaseSettings):
    """Where kundenwert keeps its state.

    The default is fully embedded: SQLite at ``var/kundenwert.db`` below the working directory.
    """

    model_config = SettingsConfigDict(env_prefix="KUNDENWERT_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Folder for embedded state (database, runs).")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default sqlite:///<home>/kundenwert.db.",
    )

    actions: Path | None = Field(
        default=None,
        description="Action catalog TOML used when a command or the service is given none "
        "(default: the packaged catalog).",
    )
    reload_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often the service looks for a new scoring run and swaps to it (0: never).",
    )

    erasure_key: SecretStr | None = Field(
        default=None,
        description="Key of the keyed hashes of erased customer ids (any long random text). Default: "
        "<home>/erasure.key, made on first use; a shared store needs the same key everywhere.",
    )
    retention_days: int = Field(
        default=730,
        ge=1,
        description="Decisions and feedback events older than this are deleted by the service's "
        "maintenance schedule.",
    )

    allow_unhashed_models: bool = Field(
        default=False,
        description="Load registered model versions that have no recorded SHA-256 (made before "
        "kundenwert recorded them) with kundenwert's trusted types; refused otherwise.",
    )

    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Request bodies larger than this (bytes) are refused with 413 before they are read.",
    )
    max_target_list: int = Field(
        default=100_000,
        ge=1,
        description="Most customers in one target list: a larger size, or a budget that would buy "
        "more, is cut to it (the list's summary says so).",
    )
    busy_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a write to a SQLite store waits for another writer's lock (an import, "
        "`kundenwert score`) before it fails; the service then answers 503 with Retry-After.",
    )
    connect_timeout: int = Field(
        default=5,
        ge=1,
        description="Seconds to wait for a PostgreSQL connection before the store counts as unavailable.",
    )
    statement_timeout: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a PostgreSQL statement may run before the server cancels it (0: no limit); "
        "bulk writes of an import are exempt.",
    )
    decide_on_loop: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Where a next-best-action request reads the store: on the event loop (faster: no "
        "hop to a worker thread) or in the thread pool, where a stalled database holds up only that "
        "request while /health/live and the rest still answer. `auto`: on the loop for SQLite (its "
        "reads never wait for a writer in WAL mode), in the pool for PostgreSQL (a server that may hang).",
    )
    decision_lag: float = Field(
        default=2.0,
        gt=0,
        description="Seconds queued decisions may wait for their commit before the service refuses new "
        "decisions (503) instead of handing out ids it cannot store yet.",
    )

    debug: bool = Field(
        default=False,
        description="Show the Python traceback of an unexpected error (a bug) in the CLI; without it "
        "the command prints one line naming the error and exits 70.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the web app's session cookies (any long random text). Default: "
        "<home>/session.key, made on first use (mode 0600), so every worker on one home shares it.",
    )
    session_hours: float = Field(
        default=8.0,
        gt=0,
        description="Hours a web app sign-in lasts before the user signs in again (the key's own "
        "revocation or expiry ends it sooner).",
    )
    currency: str = Field(
        default="EUR",
        min_length=3,
        max_length=3,
        description="ISO 4217 code of the money amounts the web app shows (the store holds plain numbers).",
    )
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Where the MLflow UI of the registry runs (`mlflow ui`): the data science page links to it.",
    )

    rate_limits: dict[str, tuple[float, float] | None] = Field(
        default_factory=dict,
        description='Per-key rate limits by role as JSON, e.g. {"campaign": [50, 100]}: requests per '
        "second and burst of each API key of that role, per worker process; null: no limit. Roles not "
        "named keep their defaults (sales, campaign 10000/s, burst 20000; marketing, data_science, "
        "admin 1000/s, burst 2000). Over the limit: 429 with Retry-After.",
    )

    @field_validator("rate_limits")
    @classmethod
    def _positive_limits(
        cls, limits: dict[str, tuple[float, float] | None]
    ) -> dict[str, tuple[float, float] | None]:
        for role, limit in limits.items():
            if limit is not None and not (limit[0] > 0 and limit[1] >= 1):
                raise ValueError(
                    f"rate limit of {role!r}: give [requests per second > 0, burst >= 1] or null, not {list(limit)}"
                )
        return limits

    threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads kundenwert's fits and predictions use in all (training, scoring): "
        "independent fits run in that many worker processes of one thread each. Default: the cores "
        "this process may use; on a machine shared with other jobs, kundenwert's share of them.",
    )

    spark_master: str = Field(
        default="local[2]",
        description="Spark master of `--engine spark` (local[N]: N cores on this machine; "
        "spark://host:7077, yarn, k8s://...: a cluster) when --master is not given.",
    )
    spark_jars: str = Field(
        default="",
        description="Comma-separated jars for `--engine spark` (a JDBC --source's driver; default "
        "for jdbc:postgresql: Debian's /usr/share/java/postgresql.jar).",
    )

    def resolved_rate_limits(self) -> dict[str, tuple[float, float] | None]:
        """The defaults with the configured roles replaced."""
        return DEFAULT_RATE_LIMITS | self.rate_limits

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'kundenwert.db'}"


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; not cached so tests can change the env).

    An invalid ``KUNDENWERT_*`` value is a :class:`ConfigurationError` naming the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"KUNDENWERT_{'_'.join(str(p) for p in e['loc'][:1]).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"the KUNDENWERT_* settings are not valid: {problems}") from None


def debug_enabled() -> bool:
    """``KUNDENWERT_DEBUG`` is on; also when another setting is invalid (then the variable is read as is)."""
    try:
        return get_settings().debug
    except ConfigurationError:
        return os.environ.get("KUNDENWERT_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
