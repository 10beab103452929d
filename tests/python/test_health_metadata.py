"""Health, server metadata, model metadata, model readiness and model
configuration through tritonclient.http."""

import pytest
from tritonclient.utils import InferenceServerException

EXAMPLE_MODELS = [
    "simple",
    "simple_int8",
    "simple_string",
    "simple_identity",
    "delay",
    "fault",
] + [
    f"identity_{t}"
    for t in (
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "fp16",
        "bf16",
        "fp32",
        "fp64",
        "bytes",
    )
]


def test_live_and_ready(client):
    assert client.is_server_live()
    assert client.is_server_ready()


def test_live_with_query_params(client):
    # Triton's example clients send arbitrary query parameters.
    assert client.is_server_live(query_params={"test_1": 1, "test_2": 2})


def test_server_metadata(client):
    md = client.get_server_metadata()
    assert isinstance(md["name"], str) and md["name"]
    assert isinstance(md["version"], str) and md["version"]
    ext = set(md["extensions"])
    for e in (
        "binary_tensor_data",
        "classification",
        "model_repository",
        "model_configuration",
        "parameters",
    ):
        assert e in ext, f"extension {e!r} missing from {sorted(ext)}"


def test_server_metadata_name_is_triton(client):
    # simple_http_health_metadata.py (Triton's SDK example) checks this.
    assert client.get_server_metadata()["name"] == "triton"


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_every_example_model_ready(client, model):
    assert client.is_model_ready(model), f"model {model} is not ready"


def test_model_ready_versions(client):
    assert client.is_model_ready("simple", "1")
    assert not client.is_model_ready("simple", "2")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata_simple(client):
    md = client.get_model_metadata("simple", query_params={"test_1": 1})
    assert md["name"] == "simple"
    assert md["versions"] == ["1"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in md["inputs"]] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in md["outputs"]] == [
        ("OUTPUT0", "INT32", [-1, 16]),
        ("OUTPUT1", "INT32", [-1, 16]),
    ]


def test_model_metadata_versioned(client):
    md = client.get_model_metadata("simple", "1")
    assert md["name"] == "simple"


def test_model_metadata_no_batch(client):
    md = client.get_model_metadata("fault")
    assert md["inputs"][0]["shape"] == [4]
    assert md["inputs"][0]["datatype"] == "INT32"


def test_model_metadata_bytes_and_bf16(client):
    md = client.get_model_metadata("simple_string")
    assert md["inputs"][0]["datatype"] == "BYTES"
    md = client.get_model_metadata("identity_bf16")
    assert md["inputs"][0]["datatype"] == "BF16"
    assert md["inputs"][0]["shape"] == [-1, -1]


def test_model_metadata_unknown_model(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in e.value.message()
    assert "wrong_model_name" in e.value.message()


def test_model_config_simple(client):
    cfg = client.get_model_config("simple")
    assert cfg["name"] == "simple"
    assert cfg["backend"] == "add_sub"
    assert cfg["max_batch_size"] == 8
    inp = cfg["input"]
    assert [i["name"] for i in inp] == ["INPUT0", "INPUT1"]
    # Proto field names (data_type, not dataType), enum names, int64 as numbers.
    assert inp[0]["data_type"] == "TYPE_INT32"
    assert inp[0]["dims"] == [16]
    assert cfg["output"][1]["name"] == "OUTPUT1"
    assert cfg["output"][1]["data_type"] == "TYPE_INT32"
    assert "dataType" not in inp[0]


def test_model_config_defaults_present(client):
    cfg = client.get_model_config("fault")
    # Defaults are printed, as Triton prints them.
    assert cfg["max_batch_size"] == 0
    assert "version_policy" in cfg
    assert "instance_group" in cfg and cfg["instance_group"]
    assert "optional" in cfg["input"][0]


def test_model_config_parameters_and_labels(client):
    cfg = client.get_model_config("delay")
    assert cfg["parameters"]["execute_delay_ms"]["string_value"] == "1000"
    assert cfg["instance_group"][0]["count"] == 2
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    cfg = client.get_model_config("identity_fp32")
    assert cfg["output"][0]["label_filename"] == "labels.txt"
    assert cfg["input"][0]["dims"] == [-1]


def test_model_config_unknown_model(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("wrong_model_name")
    assert "Request for unknown model" in e.value.message()


def test_model_config_unknown_version(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("simple", "7")
    assert "simple" in e.value.message()


def test_log_settings_roundtrip(client):
    settings = client.get_log_settings()
    assert "log_verbose_level" in settings
    updated = client.update_log_settings({"log_verbose_level": 1})
    assert updated["log_verbose_level"] == 1
    restored = client.update_log_settings(
        {"log_verbose_level": settings["log_verbose_level"]}
    )
    assert restored["log_verbose_level"] == settings["log_verbose_level"]


def test_trace_settings_roundtrip(client):
    settings = client.get_trace_settings()
    assert "trace_rate" in settings
    updated = client.update_trace_settings(
        model_name="simple", settings={"trace_rate": "7"}
    )
    assert updated["trace_rate"] in ("7", ["7"])
    model_settings = client.get_trace_settings(model_name="simple")
    assert "trace_rate" in model_settings
