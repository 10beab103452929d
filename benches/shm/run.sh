#!/usr/bin/env bash
# System shared memory against the request body as the tensor grows
# (64 B .. 16 MiB), HTTP and gRPC, through tritonclient on `identity_fp32`.
#
#   benches/shm/run.sh
#
# Environment: COUNT (requests per small-size measurement, default 200),
# NEREID_BIN (a prebuilt binary instead of building one). Prints the table
# (benches/shm/bench.py says how it is taken). Traffic stays on 127.0.0.1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$NEREID_ROOT"

OUT="$NEREID_ROOT/target/bench"
mkdir -p "$OUT"
cleanup() {
	stop_nereid >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debian_tool curl curl
ensure_pyenv
release_binary

step "start nereid"
start_nereid "$BIN" "$OUT/nereid-shm.log" --model-repository "$NEREID_ROOT/model_repository" \
	--model-control-mode explicit --load-model identity_fp32 --allow-client-shm true \
	--log-verbose 0 || die "nereid did not start"

step "body vs system shared memory, identity_fp32"
"$PY" benches/shm/bench.py --http-url "$NEREID_ADDR" --grpc-url "$NEREID_GRPC_ADDR" \
	--count "${COUNT:-200}" | tee "$OUT/shm.txt"
