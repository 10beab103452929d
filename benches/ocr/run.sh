#!/usr/bin/env bash
# OCR benchmark: images/s and p50/p99 latency per image at 1 and 4
# concurrent clients through nereid's `ocr` ensemble (gRPC), beside the same
# images through rapidocr in Python in the same run (same PP-OCR models,
# same ONNX Runtime release, ONNX Runtime's default threads on both sides).
#
#   benches/ocr/run.sh
#
# Environment: DURATION (seconds per measurement, default 10), NEREID_BIN
# (a prebuilt binary to measure instead of building one). Prints the figures
# (benches/ocr/bench.py says how they are taken); BENCHMARKS.md is left to
# whoever records them. Traffic goes to 127.0.0.1 only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$NEREID_ROOT"

DURATION="${DURATION:-10}"
OUT="$NEREID_ROOT/target/bench"
mkdir -p "$OUT"

cleanup() {
	stop_nereid >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debian_tool curl curl
ensure_pyenv
PYTHON="$PY" bash scripts/fetch-onnxruntime.sh >/dev/null || die "fetching ONNX Runtime failed"
PYTHON="$PY" bash scripts/fetch-ocr-models.sh || die "fetching the OCR models failed"

release_binary

step "start nereid"
start_nereid "$BIN" "$OUT/nereid-ocr.log" --model-repository "$NEREID_ROOT/model_repository" \
	--log-verbose 0 || die "nereid did not start"

step "OCR: nereid vs rapidocr (${DURATION}s per measurement)"
"$PY" benches/ocr/bench.py --grpc-url "$NEREID_GRPC_ADDR" --duration "$DURATION" \
	--concurrency 1 4 | tee "$OUT/ocr.txt"
