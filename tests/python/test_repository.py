"""The model repository extension: index, load (with a config override),
unload, in explicit model-control mode on a server of the test's own."""

import json
import os

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import NereidServer, model_repository


def example_models(repo):
    return sorted(
        d
        for d in os.listdir(repo)
        if os.path.isfile(os.path.join(repo, d, "config.pbtxt"))
    )


def simple_request(client, batch=1, model="simple"):
    a = np.arange(16 * batch, dtype=np.int32).reshape(batch, 16)
    b = np.ones((batch, 16), dtype=np.int32)
    inputs = [httpclient.InferInput(n, [batch, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    r = client.infer(model, inputs)
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    return r


def simple_config(max_batch_size):
    io = lambda n: {"name": n, "data_type": "TYPE_INT32", "dims": [16]}  # noqa: E731
    return json.dumps(
        {
            "name": "simple",
            "backend": "add_sub",
            "max_batch_size": max_batch_size,
            "input": [io("INPUT0"), io("INPUT1")],
            "output": [io("OUTPUT0"), io("OUTPUT1")],
        }
    )


@pytest.fixture()
def ec(explicit_server):
    c = httpclient.InferenceServerClient(url=explicit_server.url)
    yield c
    c.close()


def test_index_in_none_mode_all_ready(client):
    index = client.get_model_repository_index()
    names = sorted(m["name"] for m in index)
    assert names == example_models(model_repository())
    for m in index:
        assert m.get("state") == "READY", m
        assert m.get("version") == "1", m


def test_load_refused_in_none_mode(client):
    with pytest.raises(InferenceServerException):
        client.load_model("simple")
    assert client.is_model_ready("simple")


def test_explicit_starts_empty(ec, explicit_repository):
    assert ec.is_server_live()
    index = ec.get_model_repository_index()
    assert sorted(m["name"] for m in index) == example_models(explicit_repository)
    assert all(m.get("state") != "READY" for m in index), index
    assert not ec.is_model_ready("simple")


def test_index_ready_filter(ec, explicit_server):
    import urllib.request

    ec.load_model("simple")
    req = urllib.request.Request(
        f"http://{explicit_server.url}/v2/repository/index",
        data=b'{"ready": true}',
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        ready = json.loads(r.read())
    assert [m["name"] for m in ready] == ["simple"]
    assert ready[0]["state"] == "READY"
    assert ready[0]["version"] == "1"


def test_load_infer_unload(ec):
    ec.load_model("simple")
    assert ec.is_model_ready("simple")
    assert not ec.is_model_ready("simple_int8")
    simple_request(ec)
    ec.unload_model("simple")
    assert not ec.is_model_ready("simple")
    with pytest.raises(InferenceServerException) as e:
        simple_request(ec)
    assert "simple" in e.value.message()
    states = {m["name"]: m for m in ec.get_model_repository_index()}
    assert states["simple"].get("state") == "UNAVAILABLE", states["simple"]
    ec.load_model("simple")
    simple_request(ec)


def test_load_with_config_override(ec):
    ec.load_model("simple", config=simple_config(16))
    assert ec.get_model_config("simple")["max_batch_size"] == 16
    simple_request(ec, batch=12)
    with pytest.raises(InferenceServerException) as e:
        simple_request(ec, batch=17)
    assert "<= 16" in e.value.message(), e.value.message()
    # A plain load goes back to the on-disk configuration.
    ec.load_model("simple")
    assert ec.get_model_config("simple")["max_batch_size"] == 8


def test_load_with_partial_override_sdk_style(ec):
    # simple_http_model_control.py sends just this, max_batch_size as a string
    # (protobuf JSON accepts either), and expects 16 back.
    ec.load_model("simple")
    ec.load_model("simple", config='{"max_batch_size":"16"}')
    assert ec.get_model_config("simple")["max_batch_size"] == 16


def test_load_with_malformed_override(ec):
    with pytest.raises(InferenceServerException) as e:
        ec.load_model(
            "simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}'
        )
    assert "failed to load" in e.value.message(), e.value.message()


def test_load_unknown_model(ec):
    with pytest.raises(InferenceServerException) as e:
        ec.load_model("wrong_model_name")
    assert "failed to load" in e.value.message(), e.value.message()
    assert "wrong_model_name" in e.value.message()


def test_load_broken_config_reports_error(ec, explicit_repository):
    broken = explicit_repository / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "identity"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        "this_is_not_a_field: 3\n"
    )
    with pytest.raises(InferenceServerException) as e:
        ec.load_model("broken")
    msg = e.value.message()
    assert "broken" in msg and "this_is_not_a_field" in msg, msg
    states = {m["name"]: m for m in ec.get_model_repository_index()}
    assert states["broken"].get("state") == "UNAVAILABLE", states["broken"]
    assert states["broken"].get("reason"), states["broken"]


def test_load_wrong_backend_reports_error(ec, explicit_repository):
    m = explicit_repository / "nobackend"
    (m / "1").mkdir(parents=True)
    (m / "config.pbtxt").write_text(
        'name: "nobackend"\nbackend: "no_such_backend"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    with pytest.raises(InferenceServerException) as e:
        ec.load_model("nobackend")
    assert "no_such_backend" in e.value.message(), e.value.message()


def test_unload_dependents_flag(ec):
    ec.load_model("simple_int8")
    ec.unload_model("simple_int8", unload_dependents=True)
    assert not ec.is_model_ready("simple_int8")


def test_load_model_flag(explicit_repository):
    s = NereidServer(
        ["--model-control-mode=explicit", "--load-model=simple_string"],
        repository=explicit_repository,
        name="nereid-load-model",
    ).start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        assert c.is_model_ready("simple_string")
        assert not c.is_model_ready("simple")
        c.close()
    finally:
        s.stop()


def test_load_model_star(explicit_repository):
    s = NereidServer(
        ["--model-control-mode=explicit", "--load-model=*"],
        repository=explicit_repository,
        name="nereid-load-all",
    ).start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        for name in example_models(explicit_repository):
            assert c.is_model_ready(name), name
        c.close()
    finally:
        s.stop()
