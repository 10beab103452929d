#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 s, every target)
#
# Uses cargo-fuzz (libFuzzer) on the stable toolchain: `-s none` builds
# without a sanitizer, which is what needs nightly; coverage instrumentation
# (sancov) and `--cfg fuzzing` work on stable. cargo-fuzz is installed with
# `cargo install` when missing (about a minute, once per machine).
#
# The corpus grows in fuzz/corpus/<target> (ignored by git), seeded from the
# committed fuzz/seeds/<target>. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the run; reproduce it with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NEREID_ROOT"

SECONDS_PER_TARGET="${1:-30}"
shift || true
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
	TARGETS=(http1_request kserve_body config_pbtxt http2_frames hpack_decoder grpc_message)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
	step "installing cargo-fuzz"
	cargo install cargo-fuzz --locked
fi

step "cargo fuzz build (stable, no sanitizer)"
cargo fuzz build -s none

failed=()
for t in "${TARGETS[@]}"; do
	step "fuzz $t for ${SECONDS_PER_TARGET}s"
	mkdir -p "fuzz/corpus/$t"
	log="fuzz/corpus/$t.log"
	if cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
		-max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
		grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added)' "$log" || tail -n 3 "$log"
		echo "ok: $t"
	else
		echo "FAILED: $t; the fuzzer's report:"
		grep -A 8 -m 1 'panicked at' "$log" || true
		grep -v -E '^(#[0-9]+ +(NEW|REDUCE|pulse|INITED)|INFO:)' "$log" | grep -v '^ *[0-9]*: \|^ *at ' | tail -n 30
		failed+=("$t")
	fi
done

if ((${#failed[@]})); then
	echo "fuzz targets that failed: ${failed[*]}"
	exit 1
fi
echo "every fuzz target ran ${SECONDS_PER_TARGET}s without a failure"
