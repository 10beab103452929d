"""Ensembles (`platform: "ensemble"`) through tritonclient over HTTP and gRPC:
results of a chain and of parallel branches joined, a failing step named in
the error, load-time validation errors naming the step and the tensor,
readiness that follows the composing models, `unload_dependents`, and the
statistics of the ensemble and of its composing models.

Every test runs on a server of this module's own, in explicit model-control
mode, over a repository holding the example ensembles, the models they use,
and test-only ensembles written here."""

import shutil
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import NereidServer, model_repository
from test_scheduling import wait_until

EXAMPLES = ("simple", "identity_int32", "fault", "delay", "simple_chain", "simple_branches")


def tensor(name, dtype="TYPE_INT32", dims="[ -1 ]"):
    return f'{{ name: "{name}" data_type: {dtype} dims: {dims} }}'


def step(model, inputs, outputs):
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs]
    return f'{{ model_name: "{model}" model_version: -1 {" ".join(maps)} }}'


def ensemble(name, inputs, outputs, steps, max_batch_size=8):
    return textwrap.dedent(
        f"""\
        name: "{name}"
        platform: "ensemble"
        max_batch_size: {max_batch_size}
        input [ {", ".join(inputs)} ]
        output [ {", ".join(outputs)} ]
        ensemble_scheduling {{ step [ {", ".join(steps)} ] }}
        """
    )


IDENTITY = ("identity_int32", [("INPUT0", "INPUT0")], [("OUTPUT0", "OUTPUT0")])

TEST_MODELS = {
    # A non-batching INT32 identity, so that `fault` can be a second step.
    "identity4": 'name: "identity4" backend: "identity" max_batch_size: 0\n'
    f"input [ {tensor('INPUT0', dims='[ 4 ]')} ] output [ {tensor('OUTPUT0', dims='[ 4 ]')} ]\n",
    "fault_second": ensemble(
        "fault_second",
        [tensor("INPUT0", dims="[ 4 ]")],
        [tensor("OUTPUT0", dims="[ 4 ]")],
        [
            step("identity4", [("INPUT0", "INPUT0")], [("OUTPUT0", "MID")]),
            step("fault", [("INPUT0", "MID")], [("OUTPUT0", "OUTPUT0")]),
        ],
        max_batch_size=0,
    ),
    # One step on `delay`, which waits in its execution until cancelled.
    "slow": ensemble(
        "slow",
        [tensor("INPUT0", "TYPE_FP32")],
        [tensor("OUTPUT0", "TYPE_FP32")],
        [step("delay", [("INPUT0", "INPUT0")], [("OUTPUT0", "OUTPUT0")])],
    ),
    "bad_type": ensemble(
        "bad_type",
        [tensor("INPUT0", "TYPE_FP32")],
        [tensor("OUTPUT0")],
        [step(*IDENTITY)],
    ),
    "bad_cycle": ensemble(
        "bad_cycle",
        [tensor("INPUT0")],
        [tensor("OUTPUT0")],
        [
            step(*IDENTITY),
            step("identity_int32", [("INPUT0", "T2")], [("OUTPUT0", "T1")]),
            step("identity_int32", [("INPUT0", "T1")], [("OUTPUT0", "T2")]),
        ],
    ),
    "bad_unused": ensemble(
        "bad_unused",
        [tensor("INPUT0")],
        [tensor("OUTPUT0")],
        [
            step(*IDENTITY),
            step("identity_int32", [("INPUT0", "INPUT0")], [("OUTPUT0", "SPARE")]),
        ],
    ),
    "bad_missing": ensemble(
        "bad_missing",
        [tensor("INPUT0")],
        [tensor("OUTPUT0")],
        [step("identity_int32", [("INPUT0", "NOWHERE")], [("OUTPUT0", "OUTPUT0")])],
    ),
    # Batching more than a batching composing model does (Triton's rule; a
    # non-batching composing model is allowed when the shapes agree).
    "bad_batch": ensemble(
        "bad_batch",
        [tensor("INPUT0")],
        [tensor("OUTPUT0")],
        [step(*IDENTITY)],
        max_batch_size=16,
    ),
    "bad_unknown": ensemble(
        "bad_unknown",
        [tensor("INPUT0")],
        [tensor("OUTPUT0")],
        [step("no_such_model", [("INPUT0", "INPUT0")], [("OUTPUT0", "OUTPUT0")])],
    ),
}

LOAD_ERRORS = {
    "bad_type": "ensemble 'bad_type': ensemble tensor 'INPUT0': ensemble input 'INPUT0' "
    "is TYPE_FP32 but step 1 'identity_int32' input 'INPUT0' takes TYPE_INT32",
    "bad_cycle": "ensemble 'bad_cycle': the steps form a cycle: step 2 'identity_int32' "
    "reads ensemble tensor 'T2' from step 3 'identity_int32'; step 3 'identity_int32' "
    "reads ensemble tensor 'T1' from step 2 'identity_int32'",
    "bad_unused": "ensemble 'bad_unused': step 2 'identity_int32' writes output 'OUTPUT0' "
    "to ensemble tensor 'SPARE', which no step reads and is not an ensemble output",
    "bad_missing": "ensemble 'bad_missing': step 1 'identity_int32' reads input 'INPUT0' "
    "from ensemble tensor 'NOWHERE', which is neither an ensemble input nor any step's output",
    "bad_batch": "ensemble 'bad_batch': step 1 'identity_int32': the ensemble batches up to 16 "
    "but model 'identity_int32' has max_batch_size 8",
    "bad_unknown": "ensemble 'bad_unknown': composing model 'no_such_model' failed to load",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensembles")
    for name in EXAMPLES:
        shutil.copytree(model_repository() / name, root / name)
    for name, config in TEST_MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    return root


def start(repo, *models):
    args = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in models)]
    # Endpoints come up before the startup models load: with models to
    # load, wait until they are ready (strict readiness), not just live.
    return NereidServer(args, repository=repo, name="nereid-ensemble").start(
        ready_path="/v2/health/ready" if models else "/v2/health/live"
    )


@pytest.fixture(scope="module")
def serving(repo):
    """Serves the working ensembles (and so their composing models)."""
    s = start(repo, "simple_chain", "simple_branches", "fault_second", "slow")
    yield s
    s.stop()


@pytest.fixture()
def fresh(repo):
    """A server with nothing loaded, for tests that load and unload."""
    s = start(repo)
    yield s
    s.stop()


def client_for(server, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.url)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)


def simple_infer(client, module, model, outputs=None, batch=2):
    a = np.arange(16 * batch, dtype=np.int32).reshape(batch, 16)
    b = np.full((batch, 16), 3, dtype=np.int32)
    inputs = [module.InferInput(n, [batch, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    requested = [module.InferRequestedOutput(o) for o in outputs] if outputs else None
    return a, b, client.infer(model, inputs, outputs=requested)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["simple_chain", "simple_branches"])
def test_results(serving, protocol, model):
    module, client = client_for(serving, protocol)
    a, b, result = simple_infer(client, module, model)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    # Asking for one output returns that one; every step still runs.
    a, b, result = simple_infer(client, module, model, outputs=["OUTPUT1"])
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_failing_step_fails_the_request_in_tritons_wording(serving, protocol):
    module, client = client_for(serving, protocol)
    x = module.InferInput("INPUT0", [4], "INT32")
    x.set_data_from_numpy(np.arange(4, dtype=np.int32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("fault_second", [x])
    # Triton's wording: the ensemble, then the failing model's own message.
    assert e.value.message().startswith("in ensemble 'fault_second', "), e.value.message()
    assert "fault" in e.value.message()[len("in ensemble 'fault_second', ") :], e.value.message()
    # The ensemble and its models stay up.
    assert client.is_model_ready("fault_second")
    client.close()


def test_cancelling_the_request_cancels_its_steps(serving):
    """The client gives up after 0.3 s on a step told to take 60 s; the
    step is cancelled, so both the ensemble and `delay` count a failure."""
    c = httpclient.InferenceServerClient(serving.url)
    fails = lambda model: http_stats(c, model)["inference_stats"]["fail"]["count"]  # noqa: E731
    before = {m: fails(m) for m in ("slow", "delay")}
    g = grpcclient.InferenceServerClient(serving.grpc_url)
    x = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        g.infer("slow", [x], parameters={"execute_delay_ms": 60000}, client_timeout=0.3)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    g.close()
    wait_until(
        lambda: all(fails(m) == before[m] + 1 for m in before),
        timeout=10.0,
        what="the ensemble and its cancelled step to be counted as failed",
    )
    c.close()


def test_invalid_ensembles_fail_to_load_naming_step_and_tensor(fresh):
    c = httpclient.InferenceServerClient(fresh.url)
    for name, expected in LOAD_ERRORS.items():
        with pytest.raises(InferenceServerException) as e:
            c.load_model(name)
        assert expected in e.value.message(), (name, e.value.message())
        assert not c.is_model_ready(name)
        row = [m for m in c.get_model_repository_index() if m["name"] == name]
        assert row and row[0]["state"] == "UNAVAILABLE", row
        assert expected in row[0]["reason"], row
    c.close()
    g = grpcclient.InferenceServerClient(fresh.grpc_url)
    with pytest.raises(InferenceServerException) as e:
        g.load_model("bad_type")
    assert LOAD_ERRORS["bad_type"] in e.value.message()
    g.close()


def http_stats(client, model):
    return client.get_inference_statistics(model)["model_stats"][0]


def test_statistics_of_the_ensemble_and_its_steps(repo):
    server = start(repo, "simple_branches")
    try:
        c = httpclient.InferenceServerClient(server.url)
        for _ in range(3):
            simple_infer(c, httpclient, "simple_branches", batch=1)
        ensemble = http_stats(c, "simple_branches")
        assert ensemble["inference_stats"]["success"]["count"] == 3
        assert ensemble["inference_stats"]["fail"]["count"] == 0
        assert ensemble["inference_count"] == 3
        # Each step is counted by its composing model, under its own name:
        # two identity_int32 steps and one simple step per request.
        assert http_stats(c, "identity_int32")["inference_stats"]["success"]["count"] == 6
        assert http_stats(c, "simple")["inference_stats"]["success"]["count"] == 3
        bad = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        bad.set_data_from_numpy(np.zeros((1, 16), dtype=np.int32))
        with pytest.raises(InferenceServerException):
            c.infer("simple_branches", [bad])
        assert http_stats(c, "simple_branches")["inference_stats"]["fail"]["count"] == 1
        c.close()
        g = grpcclient.InferenceServerClient(server.grpc_url)
        s = g.get_inference_statistics("simple_branches", as_json=True)["model_stats"][0]
        assert int(s["inference_stats"]["success"]["count"]) == 3
        assert int(s["inference_stats"]["fail"]["count"]) == 1
        g.close()
    finally:
        server.stop()


def grpc_ready(client, model):
    """gRPC ModelReady answers a model with no ready version with an error
    status (as for a model never loaded): both mean not ready."""
    try:
        return client.is_model_ready(model)
    except InferenceServerException as e:
        assert model in e.message(), e.message()
        return False


def test_readiness_follows_composing_models(fresh):
    c = httpclient.InferenceServerClient(fresh.url)
    g = grpcclient.InferenceServerClient(fresh.grpc_url)
    # Loading an ensemble loads its composing models.
    c.load_model("simple_chain")
    for model in ("simple_chain", "simple", "identity_int32"):
        assert c.is_model_ready(model) and g.is_model_ready(model), model
    simple_infer(c, httpclient, "simple_chain")
    assert c.is_server_ready()

    c.unload_model("identity_int32")
    assert not c.is_model_ready("simple_chain")
    assert not grpc_ready(g, "simple_chain")
    assert not c.is_server_ready()
    row = [m for m in c.get_model_repository_index() if m["name"] == "simple_chain"]
    assert row[0]["state"] == "UNAVAILABLE", row
    assert row[0]["reason"] == "composing model 'identity_int32' is not ready", row
    with pytest.raises(InferenceServerException) as e:
        simple_infer(c, httpclient, "simple_chain")
    assert e.value.message().endswith(
        "'simple_chain' has no available versions: composing model 'identity_int32' is not ready"
    ), e.value.message()

    c.load_model("identity_int32")
    assert c.is_model_ready("simple_chain") and grpc_ready(g, "simple_chain")
    simple_infer(g, grpcclient, "simple_chain")
    assert c.is_server_ready()
    c.close()
    g.close()


def test_unload_dependents_unloads_composing_models(fresh):
    c = httpclient.InferenceServerClient(fresh.url)
    g = grpcclient.InferenceServerClient(fresh.grpc_url)
    c.load_model("simple_chain")
    c.load_model("simple_branches")
    # simple and identity_int32 stay: simple_branches still uses them.
    c.unload_model("simple_chain", unload_dependents=True)
    assert not c.is_model_ready("simple_chain")
    assert c.is_model_ready("simple") and c.is_model_ready("identity_int32")
    simple_infer(c, httpclient, "simple_branches")
    g.unload_model("simple_branches", unload_dependents=True)
    for model in ("simple_branches", "simple", "identity_int32"):
        assert not c.is_model_ready(model), model
    # Without the flag, only the ensemble goes.
    c.load_model("simple_chain")
    c.unload_model("simple_chain")
    assert not c.is_model_ready("simple_chain")
    assert c.is_model_ready("simple") and c.is_model_ready("identity_int32")
    c.close()
    g.close()
