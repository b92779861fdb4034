"""One settings model for every Harbinger component.

Values come from, in order of precedence: CLI flags (each command copies its flags in),
environment variables ``HARBINGER_<SECTION>__<FIELD>`` (for example
``HARBINGER_WEBHOOK__PORT=9443``), a YAML file named by ``HARBINGER_CONFIG``, then
the defaults below. Each component reads only its own section plus ``kube``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from harbinger import __version__, contract
from harbinger.documents import read_document
from harbinger.errors import InvalidInput
from harbinger.graph import WORKLOAD_EDGES_QUERY
from harbinger.prometheus import PrometheusConnection
from harbinger.sidecar import SidecarLimits


class _Section(BaseModel):
    """A settings section: an unknown key is refused with its name (a misspelt or invented
    variable such as ``HARBINGER_WEBHOOK__PROMETHEUS_URL`` would otherwise be dropped silently)."""

    model_config = ConfigDict(extra="forbid")


class KubeSettings(_Section):
    #: Path to a kubeconfig; empty means ``$KUBECONFIG``, then ``~/.kube/config``, then in-cluster.
    kubeconfig: Path | None = None
    context: str | None = None


class ServerSettings(_Section):
    """What every Harbinger HTTP server shares."""

    host: str = "0.0.0.0"
    port: int = Field(8443, ge=1, le=65535)
    #: Directory holding ``tls.crt`` and ``tls.key``; empty means plain HTTP (extender only).
    cert_dir: Path | None = None
    #: How often the server checks its certificate files for rotation.
    cert_reload_seconds: float = Field(10.0, gt=0)
    #: SIGTERM waits this long for in-flight requests before closing.
    shutdown_grace_seconds: float = Field(10.0, ge=0)


class WebhookSettings(ServerSettings):
    port: int = Field(8443, ge=1, le=65535)
    #: Where trained forecasters live: one directory per service, as ``harbinger train`` writes them.
    models_dir: Path = Path("/var/lib/harbinger/models")
    #: Bodies above this get 413; the apiserver caps AdmissionReview at 3 MiB itself.
    max_body_bytes: int = 3 * 1024 * 1024
    #: Bounds on forecast-sized requests, whatever the profile says.
    min_cpu_cores: float = Field(0.01, ge=0)
    max_cpu_cores: float = Field(8.0, gt=0)
    min_memory_bytes: int = Field(16 * 2**20, ge=0)
    max_memory_bytes: int = Field(16 * 2**30, gt=0)
    #: How often the forecast cache is refreshed in the background.
    forecast_refresh_seconds: float = Field(60.0, gt=0)
    #: On a cache miss a review waits at most this long for the model; the run goes on in
    #: the background either way (the apiserver gives the whole review 2 s).
    forecast_miss_budget_seconds: float = Field(0.5, gt=0, le=1.5)
    #: Scheduled events (the forecaster's YAML format) given to every forecast the webhook
    #: stamps, re-read when the file changes; unset: no events.
    events_file: Path | None = None
    #: The slim sidecar image (the Dockerfile's ``sidecar`` target), tagged with this release.
    chaos_sidecar_image: str = f"ghcr.io/harbinger-io/harbinger-sidecar:{__version__}"
    #: When set (manifests/ set it to ``harbinger-scheduler``), warm-up pods are sent to
    #: the scheduler that asks the extender; other pods keep their scheduler.
    scheduler_name: str | None = None


class ExtenderSettings(ServerSettings):
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=1, le=65535)
    #: A placement the extender scored is counted against its node until the watch shows
    #: the pod bound there, or for this long, whichever comes first.
    assumed_placement_seconds: float = Field(30.0, gt=0)
    #: Whether a node that declares no ``harbinger.io/bandwidth`` may take a pod that
    #: declares bandwidth (it then scores lowest on bandwidth). False keeps such pods on
    #: nodes with proven headroom only.
    admit_undeclared_nodes: bool = True
    #: The scheduler this extender serves: its pods' bandwidth counts wherever they run; other
    #: pods count only in opted-in namespaces.
    scheduler_name: str = contract.SCHEDULER_NAME


class PlannerSettings(_Section):
    interval_seconds: float = Field(60.0, gt=0)
    forecast_only: bool = False
    #: Scale-down is held this long after the plan last asked for more (the HPA's default).
    stabilization_seconds: float = Field(300.0, ge=0)
    lease_name: str = "harbinger-planner"
    lease_namespace: str = "harbinger-system"
    lease_duration_seconds: float = Field(15.0, gt=0)
    models_dir: Path = Path("/var/lib/harbinger/models")
    #: ``/metrics``, ``/healthz`` and ``/readyz`` of the planner.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(8080, ge=1, le=65535)
    #: Derive the dependency graph from ``istio_requests_total`` at this Prometheus every run
    #: (merged with a ``--graph`` YAML); empty: the YAML graph only.
    graph_prometheus_url: str | None = None
    #: PromQL of caller -> callee rates with the labels ``source_workload``,
    #: ``source_workload_namespace``, ``destination_workload``, ``destination_workload_namespace``;
    #: ``{window}`` is filled in.
    graph_query: str = WORKLOAD_EDGES_QUERY
    #: A call counts as an edge when it happened within this many seconds.
    graph_window_seconds: float = Field(3600.0, gt=0)
    #: Plan each service's floor from the short-horizon forecast and the policy learned from
    #: its history (``scaler.headroom``); off: from the forecaster's plan only.
    short_horizon: bool = True
    #: Platform cap on the floor the planner raises for any one service, whatever its capacity
    #: profile asks (a profile is written by whoever may edit the Deployment); null: no cap.
    max_floor_replicas: int | None = Field(100, ge=1)
    #: Per-namespace caps, overriding ``max_floor_replicas`` for the namespaces named.
    namespace_max_floor_replicas: dict[str, Annotated[int, Field(ge=1)]] = {}


class HistorySettings(_Section):
    """Where a service's recent traffic comes from when its forecaster runs (the webhook's
    forecast cache and the planner read the same)."""

    prometheus_url: str = "http://prometheus.istio-system:9090"
    #: PromQL giving one service's requests/s; ``{service}`` and ``{namespace}`` are filled in.
    query: str = (
        'sum(rate(istio_requests_total{destination_workload="{service}",'
        'destination_workload_namespace="{namespace}",reporter="destination"}[5m]))'
    )
    #: How much history a forecast is given (the models need at most a week and a day).
    lookback_seconds: float = Field(8 * 86400.0, gt=0)
    #: Rehearsals and ``make demo-replay``: ``SERVICE=PATH[*SCALE]`` recorded traces replace
    #: Prometheus (use with ``replay_clock``). Empty in production.
    traces: list[str] = []


class TrainingSettings(_Section):
    """Models trained inside the cluster (``harbinger train-cluster``) and mirrored to the
    webhook and the planner (``harbinger model-mirror``)."""

    #: Where models are kept: Harbinger's own namespace, which teams cannot write to.
    store_namespace: str = "harbinger-system"
    #: The models' step (the history is read on it).
    step_seconds: int = Field(300, ge=60, le=3600)
    #: How much history a model is trained on (at least about two days; four weeks see the weekly cycle).
    lookback_seconds: float = Field(28 * 86400.0, gt=0)
    #: Same history, same seed: the same model (and nothing rewritten).
    seed: int = 0
    #: Also train one pooled model across every service's history: a service too new for a model
    #: of its own is served by it, and each other service by whichever of the two did better.
    pooled: bool = True
    #: Days at the end of each history on which its own and the pooled model are compared.
    validation_days: int = Field(3, ge=1, le=14)
    #: How often the mirror looks for new models.
    mirror_interval_seconds: float = Field(30.0, gt=0)


class ChaosSettings(_Section):
    prometheus_url: str = "http://127.0.0.1:9090"
    #: Every fault carries this expiry, so a dead controller cannot leave one behind.
    fault_ttl_seconds: float = Field(300.0, gt=0)
    dwell_seconds: float = Field(30.0, gt=0)
    reports_dir: Path = Path("chaos-reports")
    #: Steady state is measured this long before the first fault.
    baseline_seconds: float = Field(30.0, gt=0)
    sample_interval_seconds: float = Field(2.0, gt=0)
    #: PromQL rate window; at least a few scrape intervals.
    query_window_seconds: float = Field(30.0, gt=0)
    #: After rollback, keep sampling this long so the report shows the recovery.
    recovery_seconds: float = Field(10.0, ge=0)
    #: ``sidecar`` (the chaos sidecar's metrics) or ``istio`` (istio_requests_total).
    query_preset: str = Field("sidecar", pattern="^(sidecar|istio)$")
    #: Label matchers picking one service's series; ``{service}`` and ``{namespace}`` are filled in.
    query_selector: str | None = None
    #: Controller: how often it looks for due rehearsals and sweeps expired faults.
    controller_interval_seconds: float = Field(30.0, gt=0)
    #: Controller: ``/metrics``, ``/healthz``, ``/readyz`` on this port (unset: not served).
    controller_metrics_port: int | None = Field(None, ge=1, le=65535)
    controller_metrics_host: str = "0.0.0.0"
    #: Controller: the ChaosExperiment records (and their report ConfigMaps) kept per planned
    #: experiment and namespace; older ones are deleted, as a CronJob keeps its last Jobs.
    #: Declared experiments are their team's and are never deleted.
    records_history_limit: int = Field(5, ge=1, le=1000)
    # What the chaos sidecar lets any fault do in one pod, whatever the pod's annotations
    # ask (a pod's author can write them): the webhook passes these as the sidecar's flags.
    #: A fault ends at most this long after the sidecar reads it (above the TTL, which is renewed).
    sidecar_max_fault_seconds: float = Field(900.0, ge=1, le=86_400)
    sidecar_max_delay_ms: float = Field(30_000.0, ge=0, le=120_000)
    sidecar_max_cpu_cores: float = Field(2.0, ge=0, le=8)
    #: Keep below the sidecar container's memory limit (128Mi).
    sidecar_max_memory_bytes: int = Field(64 * 2**20, ge=0, le=2**30)
    #: The lowest bandwidth limit (bits/s) a fault may set.
    sidecar_min_bandwidth_bps: float = Field(64_000.0, ge=1, le=1e12)

    def sidecar_limits(self) -> SidecarLimits:
        return SidecarLimits(
            max_fault_seconds=self.sidecar_max_fault_seconds, max_delay_ms=self.sidecar_max_delay_ms,
            max_cpu_cores=self.sidecar_max_cpu_cores, max_memory_bytes=self.sidecar_max_memory_bytes,
            min_bandwidth_bps=self.sidecar_min_bandwidth_bps)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HARBINGER_", env_nested_delimiter="__", extra="forbid")

    #: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR`` (any case); ``--log-level`` overrides it.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``text`` for people, ``json`` (one object per line) for log pipelines.
    log_format: Literal["text", "json"] = "text"
    #: Rehearsals and ``make demo-replay`` only: ``START,SPEED,ORIGIN`` runs every component on
    #: trace time (see :mod:`harbinger.clock`). Empty means the wall clock.
    replay_clock: str | None = None
    kube: KubeSettings = KubeSettings()
    #: How every Prometheus URL below is reached: timeout, bearer token file, CA, headers.
    prometheus: PrometheusConnection = PrometheusConnection()
    webhook: WebhookSettings = WebhookSettings()
    extender: ExtenderSettings = ExtenderSettings()
    planner: PlannerSettings = PlannerSettings()
    history: HistorySettings = HistorySettings()
    training: TrainingSettings = TrainingSettings()
    chaos: ChaosSettings = ChaosSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Settings:
        w = self.webhook
        if w.min_cpu_cores > w.max_cpu_cores:
            raise ValueError("webhook.min_cpu_cores is above webhook.max_cpu_cores")
        if w.min_memory_bytes > w.max_memory_bytes:
            raise ValueError("webhook.min_memory_bytes is above webhook.max_memory_bytes")
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
        return init_settings, env_settings, _YamlFileSource(settings_cls)


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``HARBINGER_CONFIG``, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("HARBINGER_CONFIG")
        if not path:
            return {}
        data = read_document(path, "settings file", format="yaml")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise InvalidInput("settings file must be a mapping of sections", source=path)
        return data


def settings_from_flags(args: object, flags: Mapping[str, str]) -> Settings:
    """The settings with the command's flags on top: ``flags`` maps a flag's attribute on
    ``args`` to the setting it overrides (``"port": "webhook.port"``); a flag left unset
    (None) overrides nothing, so the environment, the settings file and the defaults show
    through. Every command builds its settings here, so a flag means the same as the
    ``HARBINGER_<SECTION>__<FIELD>`` variable it shadows."""
    overrides: dict[str, Any] = {}
    for attribute, setting in flags.items():
        value = getattr(args, attribute, None)
        if value is None:
            continue
        *sections, field = setting.split(".")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = value
    return load_settings(**overrides)


#: ``HARBINGER_`` variables that are not settings: the settings file, and the build and test
#: harness's (``hack/build-controlplane.sh``, ``harbinger-dev``).
NOT_SETTINGS = frozenset({"HARBINGER_CONFIG", "HARBINGER_BIN_DIR", "HARBINGER_TRACES_DIR"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Each ``HARBINGER_`` variable that names no setting, with the nearest that does. pydantic
    reads only the variables it looks for, so a misspelled section or a top-level typo would be
    dropped without a word and its component run on a default."""
    problems = []
    links = _service_links(environ)
    sections = {name: info.annotation for name, info in Settings.model_fields.items()}
    known = sorted(f"HARBINGER_{name.upper()}" for name in sections) + sorted(
        f"HARBINGER_{name.upper()}__{field.upper()}" for name, section in sections.items()
        if isinstance(section, type) and issubclass(section, BaseModel) for field in section.model_fields)
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith("HARBINGER_") or upper in NOT_SETTINGS or variable in links:
            continue
        head, _, rest = upper[len("HARBINGER_"):].partition("__")
        if head.lower() in sections:
            section = sections[head.lower()]
            nested = isinstance(section, type) and issubclass(section, BaseModel)
            if nested or not rest:
                continue  # a section's own fields are checked by its model (extra="forbid"), naming the field
        near = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        problems.append(f"{variable} names no setting" + (f" (did you mean {near[0]}?)" if near else ""))
    return problems


_SERVICE_LINK = re.compile(r"^(?P<name>[A-Z0-9_]+)_SERVICE_HOST$")


def _service_links(environ: Mapping[str, str]) -> set[str]:
    """The variables the kubelet sets for each Service of the pod's namespace (unless the pod
    says ``enableServiceLinks: false``): Harbinger's own Services (``harbinger-webhook``) give
    ``HARBINGER_WEBHOOK_SERVICE_HOST``, ``HARBINGER_WEBHOOK_PORT_443_TCP`` and the like. They
    come as a set around ``<NAME>_SERVICE_HOST``, so only a set is taken for one; a lone
    ``HARBINGER_WEBHOOK_PORT`` is still a typo of ``HARBINGER_WEBHOOK__PORT``."""
    links = set()
    for variable in environ:
        match = _SERVICE_LINK.match(variable)
        if match is None:
            continue
        name = match["name"]
        pattern = re.compile(rf"^{re.escape(name)}_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT"
                             r"(_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)?)$")
        if f"{name}_PORT" in environ or f"{name}_SERVICE_PORT" in environ:
            links |= {v for v in environ if pattern.match(v)}
    return links


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable InvalidInput; a
    ``HARBINGER_`` variable that names no setting is one of them."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise InvalidInput(f"invalid settings: {'; '.join(unknown)}", source="environment")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidInput(f"invalid settings: {problems}", source="settings") from exc
