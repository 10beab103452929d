"""Restricted endpoint groups (`--http-restricted-api`,
`--grpc-restricted-protocol`), through tritonclient over HTTP and gRPC.

The server restricts model-repository to an admin key and inference and
metadata (HTTP) / inference and health (gRPC) to an infer key; every other
group stays open. A restricted call without its header (or with the wrong
value) is refused, HTTP 403 / gRPC UNAVAILABLE with the header it expects;
with it, the call reaches the server and gets its real answer.
"""

import shutil
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import NereidServer, model_repository, nereid_binary

GRPC_PREFIX = "triton-grpc-protocol-"
INFER = {"infer-key": "infer-value"}
ADMIN = {"admin-key": "admin-value"}
GRPC_INFER = {GRPC_PREFIX + "infer-key": "infer-value"}
GRPC_ADMIN = {GRPC_PREFIX + "admin-key": "admin-value"}
# Each call gets a copy: tritonclient's HTTP infer adds its own headers to
# the dict it is given.


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("restricted-repository")
    shutil.copytree(model_repository() / "simple", root / "simple")
    s = NereidServer(
        [
            "--http-restricted-api=model-repository:admin-key=admin-value",
            "--http-restricted-api=inference,metadata:infer-key=infer-value",
            "--grpc-restricted-protocol=model-repository:admin-key=admin-value",
            "--grpc-restricted-protocol=inference,health:infer-key=infer-value",
        ],
        repository=root,
        name="nereid-restricted",
    ).start()
    yield s
    s.stop()


@pytest.fixture()
def http(server):
    c = httpclient.InferenceServerClient(url=server.url)
    yield c
    c.close()


@pytest.fixture()
def grpc(server):
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


def http_inputs():
    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    for i in inputs:
        i.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    return inputs


def grpc_inputs():
    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    for i in inputs:
        i.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    return inputs


def http_refused(call, header):
    with pytest.raises(InferenceServerException) as e:
        call()
    assert e.value.status() == "403"
    assert e.value.message() == f"This API is restricted, expecting header '{header}'"


def grpc_refused(call, header):
    with pytest.raises(InferenceServerException) as e:
        call()
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert e.value.message() == (
        f"This protocol is restricted, expecting header '{GRPC_PREFIX}{header}'"
    )


def test_http_inference_needs_its_header(http):
    infer = lambda headers: http.infer("simple", http_inputs(), headers=headers)  # noqa: E731
    http_refused(lambda: infer(None), "infer-key")
    http_refused(lambda: infer({"infer-key": "wrong"}), "infer-key")
    http_refused(lambda: infer(dict(ADMIN)), "infer-key")
    out = infer(dict(INFER)).as_numpy("OUTPUT0")
    assert out.tolist() == [[2 * i for i in range(16)]]


def test_http_metadata_needs_its_header(http):
    http_refused(lambda: http.get_server_metadata(), "infer-key")
    http_refused(lambda: http.get_model_metadata("simple"), "infer-key")
    assert http.get_server_metadata(headers=dict(INFER))["name"] == "triton"
    assert http.get_model_metadata("simple", headers=dict(INFER))["name"] == "simple"


def test_http_repository_needs_the_admin_header(http):
    http_refused(lambda: http.unload_model("simple", headers=dict(INFER)), "admin-key")
    http_refused(lambda: http.get_model_repository_index(), "admin-key")
    # With the header the request reaches the repository and gets its own answer.
    with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
        http.unload_model("simple", headers=dict(ADMIN))
    index = http.get_model_repository_index(headers=dict(ADMIN))
    assert [m["name"] for m in index] == ["simple"]


def test_http_unrestricted_groups_stay_open(http):
    assert http.is_server_live()
    assert http.is_model_ready("simple")
    assert http.get_model_config("simple")["name"] == "simple"
    stats = http.get_inference_statistics("simple")
    assert stats["model_stats"][0]["name"] == "simple"
    assert http.get_inference_statistics("simple", headers=dict(INFER))["model_stats"]
    assert "log_verbose_level" in http.get_log_settings()


def test_grpc_inference_needs_its_header(grpc):
    infer = lambda headers: grpc.infer("simple", grpc_inputs(), headers=headers)  # noqa: E731
    grpc_refused(lambda: infer(None), "infer-key")
    grpc_refused(lambda: infer({GRPC_PREFIX + "infer-key": "wrong"}), "infer-key")
    # The bare key is not the gRPC header: Triton prefixes it.
    grpc_refused(lambda: infer(dict(INFER)), "infer-key")
    out = infer(dict(GRPC_INFER)).as_numpy("OUTPUT1")
    assert out.tolist() == [[0] * 16]


def test_grpc_health_needs_its_header(grpc):
    grpc_refused(lambda: grpc.is_server_live(), "infer-key")
    grpc_refused(lambda: grpc.is_server_ready(), "infer-key")
    grpc_refused(lambda: grpc.is_model_ready("simple"), "infer-key")
    assert grpc.is_server_live(headers=dict(GRPC_INFER))
    assert grpc.is_model_ready("simple", headers=dict(GRPC_INFER))


def test_grpc_repository_needs_the_admin_header(grpc):
    grpc_refused(lambda: grpc.unload_model("simple", headers=dict(GRPC_INFER)), "admin-key")
    with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
        grpc.unload_model("simple", headers=dict(GRPC_ADMIN))


def test_grpc_unrestricted_groups_stay_open(grpc):
    assert grpc.get_server_metadata().name == "triton"
    assert grpc.get_model_metadata("simple").name == "simple"
    assert grpc.get_model_config("simple").config.name == "simple"
    assert grpc.get_inference_statistics("simple").model_stats[0].name == "simple"
    assert grpc.get_inference_statistics("simple", headers=dict(GRPC_INFER)).model_stats


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--grpc-restricted-protocol=model-repository,health:k1=v1",
             "--grpc-restricted-protocol=metadata,health:k2=v2"],
            "restricted protocol 'health' can not be specified in multiple config groups",
        ),
        (
            ["--http-restricted-api=model-reposit,health:k1=v1"],
            "unknown restricted api 'model-reposit'",
        ),
        (["--http-restricted-api=health:k1"], "<key>=<value>"),
    ],
)
def test_bad_groups_stop_startup(args, message, tmp_path):
    done = subprocess.run(
        [str(nereid_binary()), "--model-repository", str(tmp_path), "--http-port=0",
         "--grpc-port=0", "--metrics-port=0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
