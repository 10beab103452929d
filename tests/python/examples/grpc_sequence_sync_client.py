#!/usr/bin/env python3
"""Three sequences sent one after the other over gRPC, each request waiting
for its answer, in the steps Triton's simple_grpc_sequence_sync_infer_client.py
takes (-d for the dynamic sequence models)."""

import tritonclient.grpc as grpcclient

from _sequence import run_sync

run_sync(grpcclient, "localhost:8001", __doc__)
