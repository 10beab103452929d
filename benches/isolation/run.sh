#!/usr/bin/env bash
# No client stalls the others: health-probe latency and server RSS while
# another connection on the same event loop sends gzip bombs or 32 MB JSON
# inferences (benches/isolation/probe.py says how it is measured).
#
#   benches/isolation/run.sh [BEFORE_BIN]
#
# Runs the release binary (or NEREID_BIN) at its default body limit and at a
# 1 GiB one, and, when BEFORE_BIN is given, that binary at its default too:
# each with --http-thread-count 1, so that every connection shares one loop.
# Environment: SECONDS_PER_LOAD (default 4). Traffic stays on 127.0.0.1.
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
release_binary
PYTHON="${PYTHON:-python3}"

run() { # LABEL BIN [ARGS...]
	local label="$1" bin="$2"
	shift 2
	step "$label"
	start_nereid "$bin" "$OUT/nereid-isolation.log" --model-repository "$NEREID_ROOT/model_repository" \
		--model-control-mode explicit --load-model identity_fp32 --http-thread-count 1 \
		--log-verbose 0 "$@" || die "nereid did not start"
	"$PYTHON" benches/isolation/probe.py --url "$NEREID_ADDR" --pid "$NEREID_PID" \
		--seconds "${SECONDS_PER_LOAD:-4}" --cache "$OUT/bomb.gz" --label "$label" |
		tee -a "$OUT/isolation.txt"
	stop_nereid >/dev/null || true
}

: >"$OUT/isolation.txt"
if [[ $# -ge 1 ]]; then
	run "before" "$1"
fi
run "after" "$BIN"
run "after, 1 GiB limit" "$BIN" --http-max-input-size 1073741824
