from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harbinger import contract
from harbinger.cli import build_parser
from harbinger.errors import InvalidInput
from harbinger.settings import load_settings, unknown_variables


def test_service_name_precedence() -> None:
    labels = {"app.kubernetes.io/name": "web", "app": "legacy"}
    assert contract.service_of(labels, {contract.SERVICE: "checkout"}) == "checkout"
    assert contract.service_of(labels, {}) == "web"
    assert contract.service_of({"app": "legacy"}, None) == "legacy"
    assert contract.service_of({}, {}) is None


def test_only_labelled_namespaces_and_never_system_ones_are_opted_in() -> None:
    on = {contract.ENABLED_LABEL: "true"}
    assert contract.is_opted_in("shop", on)
    assert not contract.is_opted_in("shop", {contract.ENABLED_LABEL: "yes"})
    assert not contract.is_opted_in("shop", None)
    assert not contract.is_opted_in("kube-system", on)
    assert not contract.is_opted_in("harbinger-system", on)


def test_every_contract_key_is_unique() -> None:
    keys = [v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str) and "/" in v]
    assert len(keys) == len(set(keys))


def test_settings_from_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "harbinger.yaml"
    config.write_text("webhook:\n  port: 9443\nchaos:\n  dwell_seconds: 5\n")
    monkeypatch.setenv("HARBINGER_CONFIG", str(config))
    monkeypatch.setenv("HARBINGER_WEBHOOK__PORT", "10443")  # the environment wins over the file
    settings = load_settings()
    assert settings.webhook.port == 10443
    assert settings.chaos.dwell_seconds == 5


def test_bad_settings_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARBINGER_EXTENDER__PORT", "70000")
    with pytest.raises(InvalidInput, match=r"extender\.port"):
        load_settings()


def test_bad_settings_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("webhook: [unclosed\n")
    monkeypatch.setenv("HARBINGER_CONFIG", str(config))
    with pytest.raises(InvalidInput, match=r"bad\.yaml"):
        load_settings()


def test_a_variable_that_names_no_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # What manifests/ once set, and pydantic dropped without a word: the planner and webhook
    # then read traffic from the default Prometheus URL.
    monkeypatch.setenv("HARBINGER_WEBHOOK__PROMETHEUS_URL", "http://prometheus.monitoring.svc:9090")
    with pytest.raises(InvalidInput, match=r"webhook\.prometheus_url: Extra inputs are not permitted"):
        load_settings()


def test_every_variable_the_manifests_set_names_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = Path(__file__).resolve().parents[2] / "manifests"
    names = set()
    for path in manifests.rglob("*.yaml"):
        names |= set(re.findall(r"name: (HARBINGER_[A-Z_]+)", path.read_text()))
    assert "HARBINGER_HISTORY__PROMETHEUS_URL" in names
    for name in sorted(names - {"HARBINGER_CONFIG"}):
        monkeypatch.setenv(name, "1" if "SECONDS" in name or "PORT" in name else "x")
        if name.endswith("_URL") or name.endswith("_DIR") or name.endswith("SCHEDULER_NAME"):
            monkeypatch.setenv(name, "http://example.invalid:9090" if name.endswith("_URL") else "/tmp/x")
        load_settings()  # a name that is no setting would be refused here
        monkeypatch.delenv(name)


@pytest.mark.parametrize(("variable", "message"), [
    ("HARBINGER_WEBHOKS__PORT", "HARBINGER_WEBHOKS__PORT names no setting"),
    ("HARBINGER_LOGLEVEL", "HARBINGER_LOGLEVEL names no setting (did you mean HARBINGER_LOG_LEVEL?)"),
    ("HARBINGER_LOG_LEVEL__X", "HARBINGER_LOG_LEVEL__X names no setting"),
    ("HARBINGER_PLANER__STABILIZATION_SECONDS",
     "(did you mean HARBINGER_PLANNER__STABILIZATION_SECONDS?)"),
])
def test_a_misspelled_variable_stops_the_settings_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, message: str,
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(InvalidInput, match=re.escape(message)):
        load_settings()


def test_the_kubelets_service_variables_are_not_taken_for_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a pod in harbinger-system gets for the Service harbinger-webhook (port 443, named https).
    links = {"HARBINGER_WEBHOOK_SERVICE_HOST": "10.0.0.7", "HARBINGER_WEBHOOK_SERVICE_PORT": "443",
             "HARBINGER_WEBHOOK_SERVICE_PORT_HTTPS": "443", "HARBINGER_WEBHOOK_PORT": "tcp://10.0.0.7:443",
             "HARBINGER_WEBHOOK_PORT_443_TCP": "tcp://10.0.0.7:443", "HARBINGER_WEBHOOK_PORT_443_TCP_ADDR": "10.0.0.7",
             "HARBINGER_WEBHOOK_PORT_443_TCP_PORT": "443", "HARBINGER_WEBHOOK_PORT_443_TCP_PROTO": "tcp"}
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    load_settings()
    # Without the set around it, the single underscore is a typo of the section's delimiter.
    assert unknown_variables({"HARBINGER_WEBHOOK_PORT": "9443"}) == [
        "HARBINGER_WEBHOOK_PORT names no setting (did you mean HARBINGER_WEBHOOK__PORT?)"]
    assert unknown_variables({**links, "HARBINGER_WEBHOOK_PROT": "1"}) == [
        "HARBINGER_WEBHOOK_PROT names no setting (did you mean HARBINGER_WEBHOOK__PORT?)"]


def test_a_misspelled_variable_stops_a_component_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARBINGER_")}
    env["HARBINGER_WEBHOOK__PROT"] = "9443"
    result = subprocess.run([sys.executable, "-m", "harbinger.cli", "webhook", "--cert-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "webhook.prot: Extra inputs are not permitted" in result.stderr, result.stderr
    env["HARBINGER_WEBHOOKS__PORT"] = env.pop("HARBINGER_WEBHOOK__PROT")
    result = subprocess.run([sys.executable, "-m", "harbinger.cli", "webhook", "--cert-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0 and "HARBINGER_WEBHOOKS__PORT names no setting" in result.stderr, result.stderr


def test_every_flag_the_manifests_pass_is_one_the_command_takes() -> None:
    """Each container's args in manifests/ parse with harbinger's own command line."""
    manifests = Path(__file__).resolve().parents[2] / "manifests"
    checked = []
    for path in manifests.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc):
                # The image's entrypoint is harbinger: a container of it without a command runs it.
                default = ["harbinger"] if "harbinger" in str(container.get("image", "")) else []
                command = [*(container.get("command") or default), *container.get("args", [])]
                if command[:1] != ["harbinger"]:
                    continue
                name = next(a for a in command[1:] if not a.startswith("-"))
                parser, _ = build_parser(name)
                parser.parse_args(command[1:])  # exits (SystemExit) on a flag the command does not take
                checked.append(f"{path.name}: {name}")
    assert len(checked) >= 5, checked


def _containers(doc: Any) -> list[dict[str, Any]]:
    """Every container (and init container) of a workload, at any depth (CronJob, Job, Deployment)."""
    found: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found.extend(c for c in value if isinstance(c, dict))
            else:
                found.extend(_containers(value))
    elif isinstance(doc, list):
        for item in doc:
            found.extend(_containers(item))
    return found


def test_images_are_tagged_with_the_release_never_latest() -> None:
    from harbinger import __version__
    from harbinger.settings import WebhookSettings

    manifests = Path(__file__).resolve().parents[2] / "manifests"
    images = set()
    for path in manifests.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            images |= {str(c.get("image")) for c in _containers(doc)}
    # Harbinger's own, and the upstream scheduler its extender plugs into (pinned to its release).
    assert images == {f"ghcr.io/harbinger-io/harbinger:{__version__}", "registry.k8s.io/kube-scheduler:v1.37.2"}
    assert not [i for i in images if i.endswith(":latest") or ":" not in i]
    assert WebhookSettings().chaos_sidecar_image == f"ghcr.io/harbinger-io/harbinger-sidecar:{__version__}"
    project = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in project
