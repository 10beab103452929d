"""Shared command line for our SDK-style example clients."""

import argparse
import sys

import tritonclient.http as httpclient


def connect(description, concurrency=1):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-u", "--url", default="localhost:8000", help="host:port")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    return httpclient.InferenceServerClient(
        url=args.url, verbose=args.verbose, concurrency=concurrency
    )


def fail(what):
    print(f"FAILED: {what}")
    sys.exit(1)
