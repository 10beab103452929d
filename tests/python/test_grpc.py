"""The gRPC endpoint through tritonclient.grpc (grpcio's C core): health,
metadata, configuration, inference for every datatype, async calls,
bidirectional streams with many requests in flight, per-call compression,
repository control, statistics, error statuses and deadlines, and TLS."""

import queue
import shutil
import subprocess
import threading
import time

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import NereidServer


@pytest.fixture()
def gclient(grpc_url):
    c = grpcclient.InferenceServerClient(url=grpc_url)
    yield c
    c.close()


def simple_inputs(a=None, b=None, shape=(1, 16)):
    a = np.arange(16, dtype=np.int32).reshape(shape) if a is None else a
    b = np.ones(shape, dtype=np.int32) if b is None else b
    inputs = [
        grpcclient.InferInput("INPUT0", list(a.shape), "INT32"),
        grpcclient.InferInput("INPUT1", list(b.shape), "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def check_simple(result, a, b):
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)


def rpc_error(fn, *args, **kw) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        fn(*args, **kw)
    return e.value


# -- health, metadata, configuration ---------------------------------------


def test_live_ready_and_metadata(gclient):
    assert gclient.is_server_live()
    assert gclient.is_server_ready()
    assert gclient.is_model_ready("simple")
    assert gclient.is_model_ready("simple", "1")

    meta = gclient.get_server_metadata()
    assert meta.name == "triton"
    assert "model_repository" in meta.extensions
    meta = gclient.get_server_metadata(as_json=True)
    assert meta["name"] == "triton"

    meta = gclient.get_model_metadata("simple")
    assert meta.name == "simple" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert [t.name for t in meta.outputs] == ["OUTPUT0", "OUTPUT1"]
    meta = gclient.get_model_metadata("simple", as_json=True)
    assert meta["platform"] or meta["name"] == "simple"


def test_model_config(gclient):
    config = gclient.get_model_config("simple").config
    assert config.name == "simple"
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]
    as_json = gclient.get_model_config("simple_string", as_json=True)["config"]
    assert as_json["name"] == "simple_string"
    assert as_json["input"][0]["data_type"] == "TYPE_STRING"


def test_unknown_model_metadata_and_config(gclient):
    e = rpc_error(gclient.get_model_metadata, "no_such_model")
    assert "no_such_model" in e.message(), e.message()
    e = rpc_error(gclient.get_model_config, "no_such_model")
    assert "no_such_model" in e.message(), e.message()
    try:
        assert not gclient.is_model_ready("no_such_model")
    except InferenceServerException as e:
        assert "no_such_model" in e.message(), e.message()


def test_health_check_service(grpc_url):
    """grpc.health.v1.Health/Check, called with grpcio directly; the
    messages are encoded by hand (HealthCheckRequest{service} is field 1, a
    string; the answer's status is field 1, a varint, SERVING = 1)."""
    with grpc.insecure_channel(grpc_url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=5) == b"\x08\x01"
        name = b"inference.GRPCInferenceService"
        assert check(b"\x0a" + bytes([len(name)]) + name, timeout=5) == b"\x08\x01"
        with pytest.raises(grpc.RpcError) as e:
            check(b"\x0a\x05other", timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- inference ---------------------------------------------------------------

# datatype -> (numpy type the client sends, values); two rows, batch 2.
DATATYPES = {
    "BOOL": (np.bool_, [[True, False, True], [False, False, True]]),
    "UINT8": (np.uint8, [[0, 1, 255], [9, 8, 7]]),
    "UINT16": (np.uint16, [[0, 1, 65535], [9, 8, 7]]),
    "UINT32": (np.uint32, [[0, 1, 2**32 - 1], [9, 8, 7]]),
    "UINT64": (np.uint64, [[0, 1, 2**64 - 1], [9, 8, 7]]),
    "INT8": (np.int8, [[-128, 0, 127], [9, 8, 7]]),
    "INT16": (np.int16, [[-32768, 0, 32767], [9, 8, 7]]),
    "INT32": (np.int32, [[-(2**31), 0, 2**31 - 1], [9, 8, 7]]),
    "INT64": (np.int64, [[-(2**63), 0, 2**63 - 1], [9, 8, 7]]),
    "FP16": (np.float16, [[0.0, 1.5, -2.25], [65504.0, 0.5, 0.25]]),
    "BF16": (ml_dtypes.bfloat16, [[0.0, 1.0, -2.5], [3.140625, 2.0**120, 0.0078125]]),
    "FP32": (np.float32, [[0.0, 1.5, -3.25], [3.4028234663852886e38, 0.1, 1e-45]]),
    "FP64": (np.float64, [[0.0, 0.1, -1e300], [5e-324, 1 / 3, 2.0]]),
    "BYTES": (np.object_, [[b"", b"a", b"\x00\x01\xff"], [b"x" * 300, b"\n", "\u00fc".encode()]]),
}


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_identity_every_datatype(gclient, datatype):
    np_type, rows = DATATYPES[datatype]
    sent = np.array(rows, dtype=np_type)
    model = "identity_" + datatype.lower()
    inp = grpcclient.InferInput("INPUT0", list(sent.shape), datatype)
    inp.set_data_from_numpy(sent)
    result = gclient.infer(model, [inp], request_id=f"id-{datatype}")
    assert result.get_response().id == f"id-{datatype}"
    got = result.as_numpy("OUTPUT0")
    assert got is not None and list(got.shape) == list(sent.shape)
    if datatype == "BYTES":
        assert got.tolist() == sent.tolist()
    elif datatype == "BF16":
        assert np.array_equal(got.astype(np.float32), sent.astype(np.float32))
    else:
        assert got.dtype == sent.dtype, f"{got.dtype} != {sent.dtype}"
        assert np.array_equal(got, sent), f"{got} != {sent}"


def test_simple_and_simple_string(gclient):
    inputs, a, b = simple_inputs()
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    check_simple(gclient.infer("simple", inputs, outputs=outputs), a, b)
    # Only one output asked for: only that one comes back.
    result = gclient.infer("simple", inputs, outputs=outputs[1:])
    assert result.as_numpy("OUTPUT0") is None
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)

    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    strings = [
        grpcclient.InferInput("INPUT0", [1, 16], "BYTES"),
        grpcclient.InferInput("INPUT1", [1, 16], "BYTES"),
    ]
    strings[0].set_data_from_numpy(np.array([str(x).encode() for x in a.flatten()], dtype=np.object_).reshape(1, 16))
    strings[1].set_data_from_numpy(np.array([b"1"] * 16, dtype=np.object_).reshape(1, 16))
    result = gclient.infer("simple_string", strings)
    out0 = [int(x) for x in result.as_numpy("OUTPUT0").flatten()]
    out1 = [int(x) for x in result.as_numpy("OUTPUT1").flatten()]
    assert out0 == list(range(1, 17)) and out1 == list(range(-1, 15))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_per_call_compression(gclient, algorithm):
    inputs, a, b = simple_inputs()
    check_simple(gclient.infer("simple", inputs, compression_algorithm=algorithm), a, b)
    big = np.arange(64 * 1024, dtype=np.float32).reshape(1, -1)
    inp = grpcclient.InferInput("INPUT0", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    result = gclient.infer("identity_fp32", [inp], compression_algorithm=algorithm)
    assert np.array_equal(result.as_numpy("OUTPUT0"), big)


def test_async_infer_with_concurrency(gclient):
    done = queue.Queue()
    count = 48
    for i in range(count):
        inputs, _, _ = simple_inputs(a=np.full((1, 16), i, dtype=np.int32))
        gclient.async_infer(
            "simple",
            inputs,
            partial_callback(done, i),
            request_id=str(i),
        )
    seen = set()
    for _ in range(count):
        i, result, error = done.get(timeout=30)
        assert error is None, error
        assert result.get_response().id == str(i)
        assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), i + 1))
        seen.add(i)
    assert seen == set(range(count))


def partial_callback(q, i):
    return lambda result, error: q.put((i, result, error))


def test_stream_many_in_flight_with_an_error(gclient):
    responses = queue.Queue()
    gclient.start_stream(callback=lambda result, error: responses.put((result, error)))
    count = 64
    try:
        for i in range(count):
            model = "no_such_model" if i == count // 2 else "simple"
            inputs, _, _ = simple_inputs(a=np.full((1, 16), i, dtype=np.int32))
            gclient.async_stream_infer(model, inputs, request_id=f"s{i}")
        got = [responses.get(timeout=30) for _ in range(count)]
    finally:
        gclient.stop_stream()
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1, errors
    assert "no_such_model" in errors[0].message()
    ids = [r.get_response().id for r, e in got if e is None]
    # Answers come in request order.
    assert ids == [f"s{i}" for i in range(count) if i != count // 2]
    for r, e in got:
        if e is None:
            i = int(r.get_response().id[1:])
            assert np.array_equal(r.as_numpy("OUTPUT0"), np.full((1, 16), i + 1))
    # The stream stayed usable after the error; the server is healthy.
    assert gclient.is_server_live()


def test_stream_with_delayed_requests_and_half_close(gclient):
    """stop_stream half-closes; answers still outstanding arrive first."""
    responses = queue.Queue()
    gclient.start_stream(callback=lambda result, error: responses.put((result, error)))
    for i in range(8):
        inp = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        inp.set_data_from_numpy(np.array([[float(i)]], dtype=np.float32))
        gclient.async_stream_infer(
            "delay", [inp], request_id=f"d{i}", parameters={"execute_delay_ms": 50}
        )
    gclient.stop_stream()
    got = []
    while not responses.empty():
        got.append(responses.get())
    assert [e for _, e in got if e is not None] == []
    assert [r.get_response().id for r, _ in got] == [f"d{i}" for i in range(8)]


def test_statistics(gclient):
    inputs, a, b = simple_inputs()
    gclient.infer("simple", inputs)
    stats = gclient.get_inference_statistics("simple")
    assert len(stats.model_stats) == 1
    s = stats.model_stats[0]
    assert s.name == "simple" and s.inference_count >= 1
    assert s.inference_stats.success.count >= 1
    everything = gclient.get_inference_statistics(as_json=True)
    names = {m["name"] for m in everything["model_stats"]}
    assert {"simple", "identity_fp32"} <= names


# -- errors ------------------------------------------------------------------


def test_error_statuses_and_messages(gclient):
    inputs, _, _ = simple_inputs()
    e = rpc_error(gclient.infer, "no_such_model", inputs)
    assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
    assert e.message().startswith("Request for unknown model"), e.message()
    assert "'no_such_model'" in e.message()

    wrong_shape, _, _ = simple_inputs(
        a=np.zeros((1, 15), np.int32), b=np.zeros((1, 15), np.int32), shape=(1, 15)
    )
    e = rpc_error(gclient.infer, "simple", wrong_shape)
    assert e.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected shape for input 'INPUT0' for model 'simple'" in e.message(), e.message()

    wrong_type = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 16), np.float32))
    e = rpc_error(gclient.infer, "simple", [wrong_type, inputs[1]])
    assert e.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'INPUT0'" in e.message() and "FP32" in e.message(), e.message()

    e = rpc_error(gclient.infer, "simple", inputs[:1])
    assert e.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected 2 inputs but got 1 inputs for model 'simple'" in e.message()

    e = rpc_error(gclient.register_system_shared_memory, "r", "/nereid-none", 64)
    assert e.status() == "StatusCode.UNIMPLEMENTED", e.status()
    assert gclient.is_server_live()


def test_client_timeout_on_delay(gclient):
    inp = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
    started = time.monotonic()
    e = rpc_error(
        gclient.infer,
        "delay",
        [inp],
        client_timeout=0.3,
        parameters={"execute_delay_ms": 3000},
    )
    assert e.status() == "StatusCode.DEADLINE_EXCEEDED", (e.status(), e.message())
    assert time.monotonic() - started < 2.5
    # The server is healthy and the same client keeps working.
    assert gclient.is_server_ready()
    inputs, a, b = simple_inputs()
    check_simple(gclient.infer("simple", inputs), a, b)
    result = gclient.infer("delay", [inp], client_timeout=10, parameters={"execute_delay_ms": 10})
    assert np.array_equal(result.as_numpy("OUTPUT0"), [[1.0]])


# -- repository control (a private server in explicit mode) ----------------


def test_repository_index_load_unload(explicit_server):
    c = grpcclient.InferenceServerClient(url=explicit_server.grpc_url)
    try:
        index = c.get_model_repository_index()
        names = {m.name for m in index.models}
        assert {"simple", "identity_fp32", "delay"} <= names
        assert all(m.state != "READY" for m in index.models)

        c.load_model("simple")
        assert c.is_model_ready("simple")
        ready = [m for m in c.get_model_repository_index().models if m.state == "READY"]
        assert [(m.name, m.version) for m in ready] == [("simple", "1")]
        inputs, a, b = simple_inputs()
        check_simple(c.infer("simple", inputs), a, b)

        e = rpc_error(c.load_model, "no_such_model")
        assert "no_such_model" in e.message(), e.message()

        c.unload_model("simple")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = {m.name: m.state for m in c.get_model_repository_index().models}
            if states.get("simple") != "READY":
                break
            time.sleep(0.05)
        assert states.get("simple") != "READY", states
    finally:
        c.close()


# -- TLS ---------------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=nereid test CA", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=nereid test client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", subject, cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", "ext.cnf", cwd=d)
    return d


def tls_server(pki, mutual):
    args = [
        "--model-control-mode=explicit",
        "--load-model=simple",
        "--grpc-server-cert", str(pki / "server.pem"),
        "--grpc-server-key", str(pki / "server.key"),
    ]
    if mutual:
        args += ["--grpc-use-ssl-mutual=true", "--grpc-root-cert", str(pki / "ca.pem")]
    else:
        args += ["--grpc-use-ssl=true"]
    return NereidServer(args, name="nereid-tls").start()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tls(pki, mutual):
    server = tls_server(pki, mutual)
    try:
        kw = {"ssl": True, "root_certificates": str(pki / "ca.pem")}
        if mutual:
            kw.update(private_key=str(pki / "client.key"), certificate_chain=str(pki / "client.pem"))
        c = grpcclient.InferenceServerClient(url=f"localhost:{server.grpc_port}", **kw)
        try:
            assert c.is_server_live()
            inputs, a, b = simple_inputs()
            check_simple(c.infer("simple", inputs), a, b)
        finally:
            c.close()
        if mutual:
            # Without a client certificate the handshake is refused.
            bare = grpcclient.InferenceServerClient(
                url=f"localhost:{server.grpc_port}", ssl=True,
                root_certificates=str(pki / "ca.pem"),
            )
            try:
                with pytest.raises(InferenceServerException):
                    bare.is_server_live(client_timeout=5)
            finally:
                bare.close()
        # Cleartext to the TLS port fails and leaves the server up.
        plain = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
        try:
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=5)
        finally:
            plain.close()
        assert server.alive()
    finally:
        server.stop()


def test_bad_certificate_path_is_a_clear_startup_error(tmp_path):
    server = NereidServer(
        ["--grpc-use-ssl=true", "--grpc-server-cert", str(tmp_path / "missing.pem"),
         "--grpc-server-key", str(tmp_path / "missing.key")],
        name="nereid-badcert",
    )
    with pytest.raises(RuntimeError) as e:
        server.start(timeout=20)
    text = str(e.value)
    assert "server certificate" in text and "missing.pem" in text, text


def test_threads_and_connections(grpc_url):
    """Several clients (connections) at once, each with several threads."""
    failures = []

    def worker(k):
        c = grpcclient.InferenceServerClient(url=grpc_url)
        try:
            for i in range(20):
                inputs, a, b = simple_inputs(a=np.full((1, 16), k * 100 + i, dtype=np.int32))
                check_simple(c.infer("simple", inputs), a, b)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
