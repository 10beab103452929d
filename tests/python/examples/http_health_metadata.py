#!/usr/bin/env python3
"""Health and metadata, in the steps Triton's simple_http_health_metadata.py
takes (written for nereid; the upstream script is not redistributed)."""

from tritonclient.utils import InferenceServerException

from _common import connect, fail

client = connect(__doc__)
if not client.is_server_live(query_params={"test_1": 1, "test_2": 2}):
    fail("is_server_live")
if not client.is_server_ready():
    fail("is_server_ready")
if not client.is_model_ready("simple"):
    fail("is_model_ready")
md = client.get_server_metadata()
if md["name"] != "triton":
    fail(f"server metadata name is {md['name']!r}, Triton clients expect 'triton'")
print(md)
md = client.get_model_metadata("simple", query_params={"test_1": 1, "test_2": 2})
if md["name"] != "simple":
    fail("get_model_metadata")
print(md)
try:
    client.get_model_metadata("wrong_model_name")
except InferenceServerException as e:
    if "Request for unknown model" not in e.message():
        fail(f"get_model_metadata wrong_model_name: {e.message()}")
else:
    fail("get_model_metadata wrong_model_name succeeded")
print("PASS: health metadata")
