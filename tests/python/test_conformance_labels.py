"""Conformance with Triton (issue 12): classification labels through
ensembles, and the element count of BYTES inputs.

An ensemble output asked for with a class count is labelled as Triton
labels it: by the ensemble output's own `label_filename` when it has one,
otherwise by that of the composing model output that produces it (through
nested ensembles too). A BYTES input holding fewer or more elements than
its shape gets Triton's message naming the input (L0_input_validation's
wording), over HTTP (binary data) and gRPC.

The tests run on a server of this module's own over a repository holding
`identity_fp32` (whose output has `labels.txt`), `simple_string` and the
test-only ensembles written here."""

import shutil
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import NereidServer, model_repository

TENSOR = '{{ name: "{}" data_type: TYPE_FP32 dims: [ -1 ] {} }}'


def ensemble(name, step_model, label=""):
    """A one-step FP32 ensemble over `step_model`; `label` names the
    output's own label file."""
    label = f'label_filename: "{label}"' if label else ""
    return textwrap.dedent(
        f"""\
        name: "{name}"
        platform: "ensemble"
        max_batch_size: 8
        input [ {TENSOR.format("INPUT0", "")} ]
        output [ {TENSOR.format("OUTPUT0", label)} ]
        ensemble_scheduling {{ step [ {{ model_name: "{step_model}" model_version: -1
          input_map {{ key: "INPUT0" value: "INPUT0" }}
          output_map {{ key: "OUTPUT0" value: "OUTPUT0" }} }} ] }}
        """
    )


ENSEMBLES = {
    # No label file: the labels of identity_fp32's OUTPUT0.
    "labels_inherited": ensemble("labels_inherited", "identity_fp32"),
    # Its own label file wins over the composing model's.
    "labels_own": ensemble("labels_own", "identity_fp32", "own.txt"),
    # An ensemble over an ensemble: the labels come through both.
    "labels_nested": ensemble("labels_nested", "labels_inherited"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    for name in ("identity_fp32", "simple_string"):
        shutil.copytree(model_repository() / name, root / name)
    for name, config in ENSEMBLES.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    (root / "labels_own" / "own.txt").write_text("A\nB\nC\nD\n")
    s = NereidServer(repository=root, name="nereid-labels").start()
    yield s
    s.stop()


def client_for(server, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.url)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)


def top2(server, protocol, model):
    module, client = client_for(server, protocol)
    data = np.array([[0.5, 3.0, 2.0, -1.0]], dtype=np.float32)
    inp = module.InferInput("INPUT0", list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    out = module.InferRequestedOutput("OUTPUT0", class_count=2)
    result = client.infer(model, [inp], outputs=[out]).as_numpy("OUTPUT0")
    client.close()
    assert result.shape == (1, 2)
    return [v.decode() for v in result.reshape(-1)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_composing_model_labels(server, protocol):
    expected = ["3.000000:1:one", "2.000000:2:two"]
    assert top2(server, protocol, "identity_fp32") == expected
    assert top2(server, protocol, "labels_inherited") == expected
    assert top2(server, protocol, "labels_nested") == expected


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_own_label_file_wins(server, protocol):
    assert top2(server, protocol, "labels_own") == ["3.000000:1:B", "2.000000:2:C"]


def strings_request(module, count, shape_count):
    """simple_string's two inputs holding `count` elements but shaped for
    `shape_count`, as Triton's L0_input_validation sends them."""
    data = np.array([[str(i) for i in range(count)]], dtype=object)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = module.InferInput(name, list(data.shape), "BYTES")
        if module is httpclient:
            inp.set_data_from_numpy(data, binary_data=True)
        else:
            inp.set_data_from_numpy(data)
        inp.set_shape([1, shape_count])
        inputs.append(inp)
    return inputs


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_element_count_names_the_input_as_triton(server, protocol):
    module, client = client_for(server, protocol)
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple_string", strings_request(module, 14, 16))
    assert (
        "expected 16 string elements for inference input 'INPUT1' for model "
        "'simple_string', got 14" in str(e.value)
    )
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple_string", strings_request(module, 18, 16))
    assert (
        "unexpected number of string elements 17 for inference input 'INPUT1' "
        "for model 'simple_string', expecting 16" in str(e.value)
    )
    if protocol == "http":
        assert e.value.status() == "400"
    else:
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    # The server still answers a well-formed request.
    assert client.is_model_ready("simple_string")
    client.close()
