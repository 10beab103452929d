#!/usr/bin/env python3
"""Three sequences sent one after the other over HTTP, each request waiting
for its answer, in the steps Triton's simple_http_sequence_sync_infer_client.py
takes (-d for the dynamic sequence models)."""

import tritonclient.http as httpclient

from _sequence import run_sync

run_sync(httpclient, "localhost:8000", __doc__)
