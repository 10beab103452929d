"""Shared pieces of our sequence example clients: the command line Triton's
sequence example clients take (-u, -v, -d/--dyna, -o/--offset), the models,
sequence ids and values they use, and the checks they make on the results."""

import argparse
import sys
import uuid

import numpy as np
import tritonclient.grpc as grpcclient

VALUES = [11, 7, 5, 3, 2, 0, 1]


def arguments(description, default_url):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-u", "--url", default=default_url, help="host:port")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "-d", "--dyna", action="store_true", help="use the dynamic sequence models"
    )
    parser.add_argument(
        "-o", "--offset", type=int, default=0, help="add this to the sequence ids"
    )
    return parser.parse_args()


def sequences(dyna, offset):
    """The three sequences: (model, sequence id, values). Two integer ids
    and a string id; the dyna model adds the id to the last result, so its
    string id holds an integer."""
    int_model = "simple_dyna_sequence" if dyna else "simple_sequence"
    string_model = "simple_string_dyna_sequence" if dyna else "simple_sequence"
    string_id = str(1002 + offset) if dyna else str(uuid.uuid4())
    negated = [-v for v in VALUES]
    return [
        (int_model, 1000 + offset * 2, [0] + VALUES),
        (int_model, 1001 + offset * 2, [100] + negated),
        (string_model, string_id, [20] + negated),
    ]


def one_input(module, value):
    """The INPUT tensor holding `value` and the requested OUTPUT, for the
    tritonclient `module` (http or grpc)."""
    data = np.full(shape=[1, 1], fill_value=value, dtype=np.int32)
    inputs = [module.InferInput("INPUT", data.shape, "INT32")]
    inputs[0].set_data_from_numpy(data)
    return inputs, [module.InferRequestedOutput("OUTPUT")]


def stream_request(client, model, sequence_id, values, count):
    """Sends request `count` (from 1) of the sequence of `values` on the
    client's gRPC stream, with request id "<sequence id>_<count>"."""
    inputs, outputs = one_input(grpcclient, values[count - 1])
    client.async_stream_infer(
        model_name=model,
        inputs=inputs,
        outputs=outputs,
        request_id=f"{sequence_id}_{count}",
        sequence_id=sequence_id,
        sequence_start=(count == 1),
        sequence_end=(count == len(values)),
    )


def run_sync(module, default_url, description):
    """The sync example client for the tritonclient `module` (http or grpc):
    sends every sequence, one request at a time, each waiting for its
    answer, then checks the results and exits."""
    args = arguments(description, default_url)
    client = module.InferenceServerClient(url=args.url, verbose=args.verbose)
    plan = sequences(args.dyna, args.offset)
    results = []
    for model, sequence_id, values in plan:
        outputs = []
        for count, value in enumerate(values, start=1):
            inputs, requested = one_input(module, value)
            result = client.infer(
                model_name=model,
                inputs=inputs,
                outputs=requested,
                sequence_id=sequence_id,
                sequence_start=(count == 1),
                sequence_end=(count == len(values)),
            )
            outputs.append(result.as_numpy("OUTPUT"))
        results.append(outputs)
    client.close()
    report(args.dyna, plan, results)


def mismatches(dyna, plan, results):
    """The example clients' checks: `results[k]` holds sequence k's OUTPUT
    arrays in order. Returns what differs (empty when all is well)."""
    (_, id0, _), (_, id1, _), (_, string_id, _) = plan
    int0, int1, str0 = results
    if not len(int0) == len(int1) == len(str0) == len(VALUES) + 1:
        return [f"result counts {len(int0)}, {len(int1)}, {len(str0)}"]
    found = []
    for i in range(len(int0)):
        want0 = 1 if i == 0 else VALUES[i - 1]
        want1 = 101 if i == 0 else -VALUES[i - 1]
        if i == 0:
            want_s = 20 if dyna else 21
        elif dyna:
            want_s = -VALUES[i - 1] + int(str0[i - 1][0][0])
        else:
            want_s = -VALUES[i - 1]
        if dyna and i != 0 and VALUES[i - 1] == 1:
            want0 += id0
            want1 += id1
            want_s += int(string_id)
        got = (int0[i][0][0], int1[i][0][0], str0[i][0][0])
        print(f"[{i}] {got[0]} : {got[1]} : {got[2]}")
        if got != (want0, want1, want_s):
            found.append(f"[{i}] expected {want0} : {want1} : {want_s}")
    return found


def report(dyna, plan, results):
    """Prints the verdict the way the example clients do and exits."""
    found = mismatches(dyna, plan, results)
    if found:
        print("\n".join(found))
        sys.exit(1)
    print("PASS: Sequence")
