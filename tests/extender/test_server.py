"""The extender over real HTTP(S) on 127.0.0.1, started the way the command starts it."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from certs.authority import CertificateAuthority
from extender.answer import Extender
from extender.server import make_app
from extender.state import ClusterState
from extender.wire import ExtenderFilterResult, HostPriorityList
from harbinger.cli import main

Build = Callable[..., dict[str, Any]]
Args = Callable[[dict[str, Any], list[str]], bytes]
Serve = Callable[..., contextlib.AbstractAsyncContextManager[int]]


async def test_verbs_over_http(make_node: Build, make_pod: Build, extender_args: Args, serve_app: Serve) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G"))
    state.on_node_event("ADDED", make_node("n2", "10G"))
    synced = False
    app = make_app(Extender(state), ready=lambda: synced)
    body = extender_args(make_pod(egress="2G", warmup=True), ["n1", "n2"])
    async with serve_app(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        # Before the caches have listed, the scheduler is told to go on without us.
        async with http.post("/filter", data=body) as response:
            assert response.status == 503
            assert "not synced" in (await response.json())["Error"]
        async with http.get("/readyz") as response:
            assert response.status == 503
        async with http.get("/healthz") as response:
            assert response.status == 200

        synced = True
        async with http.post("/filter", data=body, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            result = ExtenderFilterResult.model_validate_json(await response.read())
        assert result.NodeNames == ["n2"]
        assert result.FailedAndUnresolvableNodes == {"n1": "needs 2G egress bandwidth, 1G free of 1G"}

        async with http.post("/prioritize", data=extender_args(make_pod(egress="1M"), ["n1", "n2"])) as response:
            assert response.status == 200
            scores = {p.Host: p.Score for p in HostPriorityList.validate_json(await response.read())}
        assert scores["n2"] > scores["n1"]

        async with http.post("/filter", data=b'{"Pod": {}, "NodeNames": "n1"}') as response:
            assert response.status == 400
            assert "NodeNames" in (await response.json())["Error"]
        async with http.get("/filter") as response:
            assert response.status == 405

        async with http.get("/metrics") as response:
            text = await response.text()
        assert 'harbinger_extender_requests_total{outcome="checked",verb="filter"}' in text
        assert 'harbinger_extender_requests_total{outcome="bad_request",verb="filter"}' in text
        assert 'harbinger_extender_requests_total{outcome="not_ready",verb="filter"}' in text
        assert "harbinger_extender_request_seconds_bucket" in text


async def test_https_with_a_cert_dir(
    tmp_path: Path, make_node: Build, make_pod: Build, extender_args: Args, serve_app: Serve
) -> None:
    ca = CertificateAuthority.create("extender-test-ca")
    ca.issue("harbinger-extender", hosts=["127.0.0.1"]).write(tmp_path / "tls.crt", tmp_path / "tls.key")
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G"))
    trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
    app = make_app(Extender(state), ready=lambda: True)
    body = extender_args(make_pod(), ["n1"])
    async with (
        serve_app(app, cert_dir=tmp_path) as port,
        aiohttp.ClientSession() as http,
        http.post(f"https://127.0.0.1:{port}/filter", ssl=trust, data=body) as response,
    ):
        assert response.status == 200
        assert (await response.json())["NodeNames"] == ["n1"]


def test_command_refuses_a_missing_kubeconfig(tmp_path: Path, capsys: Any) -> None:
    missing = tmp_path / "nope"
    assert main(["extender", "--kubeconfig", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "kubeconfig file does not exist" in err and str(missing) in err


def test_command_refuses_a_bad_port(capsys: Any) -> None:
    assert main(["extender", "--port", "70000"]) == 2
    assert "extender.port" in capsys.readouterr().err
