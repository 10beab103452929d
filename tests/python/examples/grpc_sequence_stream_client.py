#!/usr/bin/env python3
"""Three sequences sent on one gRPC stream without waiting, answers matched
back by request id ("<sequence id>_<n>"), in the steps Triton's
simple_grpc_sequence_stream_infer_client.py takes (-d for the dynamic
sequence models)."""

import queue

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from _sequence import arguments, report, sequences, stream_request

args = arguments(__doc__, "localhost:8001")
plan = sequences(args.dyna, args.offset)
completed = queue.Queue()
with grpcclient.InferenceServerClient(url=args.url, verbose=args.verbose) as client:
    client.start_stream(callback=lambda result, error: completed.put(error or result))
    for model, sequence_id, values in plan:
        for count in range(1, len(values) + 1):
            stream_request(client, model, sequence_id, values, count)
    by_id = {str(sequence_id): [] for _, sequence_id, _ in plan}
    for _ in range(sum(len(values) for _, _, values in plan)):
        item = completed.get(timeout=60)
        if isinstance(item, InferenceServerException):
            print(item)
            raise SystemExit(1)
        by_id[item.get_response().id.split("_")[0]].append(item.as_numpy("OUTPUT"))
    client.stop_stream()
report(args.dyna, plan, [by_id[str(sequence_id)] for _, sequence_id, _ in plan])
