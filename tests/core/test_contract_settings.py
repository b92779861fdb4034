from __future__ import annotations

import re
from pathlib import Path

import pytest

from harbinger import contract
from harbinger.errors import InvalidInput
from harbinger.settings import load_settings


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
