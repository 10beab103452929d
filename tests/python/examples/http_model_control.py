#!/usr/bin/env python3
"""Model control against a server in explicit mode, in the steps Triton's
simple_http_model_control.py takes: load, a malformed and a good config
override, unload, a wrong model name. (Triton's script also expects exactly
seven models in its own example repository; ours has more, so that check is
left out.)"""

from tritonclient.utils import InferenceServerException

from _common import connect, fail

client = connect(__doc__)
if not client.get_model_repository_index():
    fail("empty repository index")
client.load_model("simple")
if not client.is_model_ready("simple"):
    fail("simple not ready after load")
try:
    client.load_model(
        "simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}'
    )
except InferenceServerException as e:
    if "failed to load" not in e.message():
        fail(f"malformed override: {e.message()}")
else:
    fail("malformed override was accepted")
client.load_model("simple", config='{"max_batch_size":"16"}')
mbs = client.get_model_config("simple")["max_batch_size"]
if mbs != 16:
    fail(f"expected max_batch_size 16 after override, got {mbs}")
client.unload_model("simple")
if client.is_model_ready("simple"):
    fail("simple still ready after unload")
try:
    client.load_model("wrong_model_name")
except InferenceServerException as e:
    if "failed to load" not in e.message():
        fail(f"wrong model name: {e.message()}")
else:
    fail("loading a wrong model name succeeded")
print("PASS: model control")
