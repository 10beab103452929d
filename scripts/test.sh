#!/usr/bin/env bash
# Runs every test nereid has, on a fresh machine too:
#
#   1. cargo fmt --check, cargo clippy --all-targets -D warnings
#   2. cargo test (unit and in-process integration tests), after fetching
#      the ONNX Runtime library into its cache (scripts/fetch-onnxruntime.sh)
#   3. the release binary, started on free loopback ports with the example
#      repository, driven by the tritonclient suite over HTTP and gRPC plus
#      adversarial HTTP/2 (tests/python, in a venv
#      at target/pyenv that this script creates) and the curl suite
#      (tests/curl/run.sh); then a clean SIGTERM shutdown
#   4. Triton's own QA tests against the release binary (scripts/triton-qa.sh),
#      only when TRITON_SERVER_REPO names a local copy of Triton's server
#      repository; otherwise reported as skipped
#   5. a short bounded run of every fuzz target (scripts/fuzz.sh)
#
# Environment:
#   FUZZ_SECONDS   seconds per fuzz target (default 30; 0 skips fuzzing)
#   TRITON_SERVER_REPO  a local copy of Triton's server repository: run its
#                  QA tests too (scripts/triton-qa.sh)
#   PYTEST_ARGS    extra arguments for pytest (e.g. "-k datatypes -x")
#   SKIP_LINT=1    skip fmt and clippy (local iteration only)
#   NEREID_BIN     serve with this binary instead of target/release/nereid
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NEREID_ROOT"

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
E2E="$NEREID_ROOT/target/e2e"
mkdir -p "$E2E"
results=()
failures=0

record() { # NAME STATUS
	results+=("$(printf '%-28s %s' "$1" "$2")")
	[[ "$2" == ok* ]] || failures=$((failures + 1))
}

cleanup() {
	stop_nereid >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debian_tool curl curl
need_debian_tool python3 python3

# Each check records its result and the run goes on, so one failure does
# not hide the others; the exit status is non-zero if any failed.
run_check() { # NAME COMMAND...
	local name="$1"
	shift
	if "$@"; then record "$name" ok; else record "$name" "FAILED (exit $?)"; fi
}

if [[ -z "${SKIP_LINT:-}" ]]; then
	step "cargo fmt --check"
	run_check "cargo fmt --check" cargo fmt --all -- --check
	step "cargo clippy --all-targets -- -D warnings"
	run_check "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
fi

# The ONNX backend's tests load ONNX Runtime from the cache this fills (the
# venv's pip downloads the wheel once; later runs find it cached).
step "ONNX Runtime library (scripts/fetch-onnxruntime.sh)"
ensure_pyenv
PYTHON="$PY" bash scripts/fetch-onnxruntime.sh || die "fetching ONNX Runtime failed"

# The `ocr` ensemble's PP-OCR models (from the rapidocr-onnxruntime wheel,
# cached after the first run) and the font its Python test renders text with.
step "OCR models (scripts/fetch-ocr-models.sh) and fonts-dejavu-core"
PYTHON="$PY" bash scripts/fetch-ocr-models.sh || die "fetching the OCR models failed"
if [[ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]]; then
	[[ "$(id -u)" == 0 ]] || die "tests/python/test_ocr.py needs DejaVu Sans: install the Debian package fonts-dejavu-core"
	apt-get update -qq >/dev/null || true
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null ||
		die "apt-get install fonts-dejavu-core failed"
fi
# rapidocr's OpenCV wheel links libGL and GLib, which slim images lack.
if ! "$PY" -c 'import cv2' 2>/dev/null; then
	[[ "$(id -u)" == 0 ]] || die "OpenCV (for rapidocr) cannot load: install the Debian packages libgl1 and libglib2.0-0"
	apt-get update -qq >/dev/null || true
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null ||
		die "apt-get install libgl1 libglib2.0-0 failed"
fi

step "cargo test"
run_check "cargo test" cargo test --locked

step "cargo build --release"
cargo build --release --locked --bin nereid
BIN="${NEREID_BIN:-$NEREID_ROOT/target/release/nereid}"

step "python environment (target/pyenv)"
ensure_pyenv
"$PY" -c 'import tritonclient.http, tritonclient.grpc, h2, numpy, pytest; print("tritonclient http+grpc ok")'

step "start nereid with the example repository"
start_nereid "$BIN" "$E2E/server.log" --model-repository "$NEREID_ROOT/model_repository" ||
	die "nereid did not start (log: $E2E/server.log)"
echo "nereid (pid $NEREID_PID) serving on $NEREID_ADDR, log at $E2E/server.log"

failures_before_e2e=$failures

step "pytest tests/python (tritonclient.http, tritonclient.grpc, h2)"
set +e
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words by design
NEREID_URL="$NEREID_ADDR" NEREID_GRPC_URL="$NEREID_GRPC_ADDR" NEREID_METRICS_URL="$NEREID_METRICS_ADDR" \
	NEREID_BIN="$BIN" NEREID_LOG="$E2E/server.log" \
	"$PY" -m pytest tests/python -q -p no:cacheprovider \
	--junitxml="$E2E/pytest.xml" ${PYTEST_ARGS:-}
rc=$?
set -e
if ((rc == 0)); then record "pytest (tritonclient)" ok; else record "pytest (tritonclient)" "FAILED (exit $rc)"; fi

step "pytest tests/gpu (runs on a GPU machine through scripts/gpu/run.sh; here it must skip)"
# Without a CUDA driver every GPU test reports "skipped: no CUDA driver";
# the step checks that they are all counted as skipped, none as passed.
set +e
gpu_out="$("$PY" -m pytest tests/gpu -q -rs -p no:cacheprovider 2>&1)"
rc=$?
set -e
echo "$gpu_out" | tail -n 3
gpu_summary="$(echo "$gpu_out" | tail -n 1)"
if ((rc == 0)) && [[ "$gpu_summary" =~ ^[0-9]+\ skipped ]] && ! grep -q passed <<<"$gpu_summary"; then
	record "GPU suite without a GPU" "ok (${gpu_summary% in *})"
elif ((rc == 0)); then
	record "GPU suite without a GPU" "ok (ran: a CUDA driver is present)"
else
	record "GPU suite without a GPU" "FAILED (exit $rc)"
fi

step "curl tests (tests/curl/run.sh)"
if bash tests/curl/run.sh "$NEREID_ADDR"; then record "curl" ok; else record "curl" FAILED; fi

step "stop nereid (SIGTERM)"
if ! kill -0 "$NEREID_PID" 2>/dev/null; then
	record "server survived the suites" "FAILED (nereid exited early)"
	tail -n 60 "$E2E/server.log"
else
	record "server survived the suites" ok
fi
set +e
stop_nereid
rc=$?
set -e
if ((rc == 0)); then record "clean shutdown on SIGTERM" ok; else
	record "clean shutdown on SIGTERM" "FAILED (exit $rc)"
	tail -n 30 "$E2E/server.log"
fi
if ((failures > failures_before_e2e)); then
	echo
	echo "--- server log tail ($E2E/server.log) ---"
	tail -n 60 "$E2E/server.log"
fi

# Triton's own QA tests (scripts/triton-qa.sh) need a local copy of
# Triton's server repository and about 12 minutes: run only when
# TRITON_SERVER_REPO names one, and say so otherwise.
if [[ -n "${TRITON_SERVER_REPO:-}" ]]; then
	step "Triton's QA suite (scripts/triton-qa.sh, $TRITON_SERVER_REPO)"
	if NEREID_BIN="$BIN" bash scripts/triton-qa.sh; then record "Triton QA suite" ok; else record "Triton QA suite" FAILED; fi
else
	record "Triton QA suite" "ok (skipped: TRITON_SERVER_REPO is not set)"
	echo "Triton QA suite: skipped: TRITON_SERVER_REPO is not set (a local copy of Triton's server repository)"
fi

if ((FUZZ_SECONDS > 0)); then
	step "fuzz targets, ${FUZZ_SECONDS}s each (scripts/fuzz.sh)"
	if bash scripts/fuzz.sh "$FUZZ_SECONDS"; then record "fuzz" ok; else record "fuzz" FAILED; fi
fi

step "summary"
printf '%s\n' "${results[@]}"
passed=$((${#results[@]} - failures))
echo "$passed passed, $failures failed"
((failures == 0))
