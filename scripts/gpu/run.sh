#!/usr/bin/env bash
# The one entry point on the GPU machine (no Rust, no network there):
#
#   bash scripts/gpu/run.sh [tests|bench|all]      (default: all)
#
# Prepare on the CPU machine first with scripts/gpu/prepare.sh, which
# builds what this runs and prints the `carry` list (target/gpu-tests and
# .whl). Here, in order:
#
#   1. installs the wheels in .whl/ (tritonclient, perf_analyzer, pytest)
#      into /tmp/site, puts /usr/local/cuda/lib64 (NVRTC) on
#      LD_LIBRARY_PATH, prints the GPUs, driver and CUDA versions
#   2. tests: the Rust GPU unit tests (NEREID_GPU_TEST_BIN, default
#      target/gpu-tests/nereid-lib-tests, when present; the without_a_driver
#      tests and the IPC helper process are skipped, and counted so); nereid on free
#      loopback ports with model_repository and model_repository_gpu in
#      explicit mode (the CPU and CUDA models the suite uses; no ONNX/OCR
#      models needed) and client shared memory allowed; the pytest suite tests/gpu, which also
#      starts servers of its own for the pool tests
#   3. bench: a fresh nereid (no verbose log) driven by benches/gpu/perf.sh
#   4. a summary table (test group | passed | failed | skipped)
#
# Results go to $OUT (default target/gpu-out), at most 8 files of at most
# 15 MiB: summary.txt, rust-tests.log, pytest.log, pytest.xml, server.log,
# extra-servers.log, bench.txt, bench-server.log. The exit status is
# non-zero when anything failed. One run must stay under 9 minutes: tests
# take about 3, bench about 6 (BENCH_BUDGET_S); `all` shrinks the bench
# budget to what is left.
#
# Environment: NEREID_BIN (default target/gpu-tests/nereid, else
# target/release/nereid); NEREID_GPU_TEST_BIN; NEREID_GPU_TEST_FILTERS
# (libtest filters, default "gpu:: shm:: backend::cuda"); PYTEST_ARGS;
# BENCH_BUDGET_S.
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ROOT="$NEREID_ROOT"
cd "$ROOT" || exit 1
MODE="${1:-all}"
case "$MODE" in
tests | bench | all) ;;
*)
	echo "usage: $0 [tests|bench|all]" >&2
	exit 2
	;;
esac

OUT="${OUT:-$ROOT/target/gpu-out}"
mkdir -p "$OUT"
LOGS="$(mktemp -d /tmp/nereid-gpu.XXXXXX)"
SUMMARY="$LOGS/summary.tsv"
: >"$SUMMARY"
RUN_STARTED=$SECONDS
SERVER_PID=""

# record GROUP PASSED FAILED SKIPPED [NOTE]
record() {
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$SUMMARY"
}

# copy_out FILE NAME: FILE to $OUT/NAME, keeping its head and tail when it
# is larger than 15 MiB.
copy_out() {
	local src="$1" dst="$OUT/$2" limit=$((15 << 20))
	[[ -f "$src" ]] || return 0
	if (($(stat -c %s "$src") > limit)); then
		{
			head -c $((2 << 20)) "$src"
			printf '\n\n[... %s bytes cut ...]\n\n' "$(($(stat -c %s "$src") - limit))"
			tail -c $((limit - (2 << 20) - 4096)) "$src"
		} >"$dst"
	else
		cp "$src" "$dst"
	fi
}


http_ok() { # URL: 0 when it answers 200 within a second
	python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# start_server LOG ARGS...: nereid on free loopback ports; sets SERVER_PID,
# HTTP_URL, GRPC_URL, METRICS_URL. Waits for liveness (60 s), then for
# readiness (60 s more); a server that stays unready (a model failed to
# load) is kept, so the tests show which models are missing.
start_server() {
	local log="$1" http grpc metrics
	shift
	http="$(free_port)"
	grpc="$(free_port)"
	metrics="$(free_port)"
	HTTP_URL="127.0.0.1:$http"
	GRPC_URL="127.0.0.1:$grpc"
	METRICS_URL="127.0.0.1:$metrics"
	"$BIN" --http-address=127.0.0.1 --http-port="$http" --grpc-address=127.0.0.1 --grpc-port="$grpc" \
		--metrics-port="$metrics" "$@" >"$log" 2>&1 &
	SERVER_PID=$!
	local deadline=$((SECONDS + 60)) what=live
	while ((SECONDS < deadline)); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			wait "$SERVER_PID"
			echo "nereid exited with $? before it was $what; log tail:" >&2
			tail -n 40 "$log" >&2
			SERVER_PID=""
			return 1
		fi
		if http_ok "http://$HTTP_URL/v2/health/$what"; then
			[[ "$what" == ready ]] && return 0
			what=ready
			deadline=$((SECONDS + 60))
		fi
		sleep 0.2
	done
	if [[ "$what" == live ]]; then
		echo "nereid was not live within 60 s; log tail:" >&2
		tail -n 40 "$log" >&2
		return 1
	fi
	echo "warning: nereid is live but not ready after 60 s (a model did not load); going on" >&2
	tail -n 20 "$log" >&2
	return 0
}

# stop_server: lib.sh's stop_nereid on the server start_server started.
stop_server() {
	[[ -n "$SERVER_PID" ]] || return 0
	NEREID_PID="$SERVER_PID"
	SERVER_PID=""
	stop_nereid
}

finish() {
	stop_server >/dev/null 2>&1
	write_summary
	copy_out "$LOGS/rust-tests.log" rust-tests.log
	copy_out "$LOGS/pytest.log" pytest.log
	copy_out "$LOGS/pytest.xml" pytest.xml
	copy_out "$LOGS/server.log" server.log
	copy_out "$LOGS/bench-server.log" bench-server.log
	if compgen -G "$LOGS/extra/*.log" >/dev/null; then
		for f in "$LOGS"/extra/*.log; do
			printf '===== %s =====\n' "$(basename "$f")"
			cat "$f"
		done >"$LOGS/extra-servers.log"
		copy_out "$LOGS/extra-servers.log" extra-servers.log
	fi
	rm -rf "$LOGS"
}

write_summary() {
	python3 - "$SUMMARY" "$OUT/summary.txt" "$((SECONDS - RUN_STARTED))" "$MODE" <<'PY'
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
header = ["test group", "passed", "failed", "skipped", "note"]
widths = [max(len(r[i]) for r in [header] + rows) for i in range(5)]
fmt = lambda r: "  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
total = [sum(int(r[i]) for r in rows) for i in (1, 2, 3)]
lines = [f"nereid GPU run ({sys.argv[4]}), {sys.argv[3]} s", "", fmt(header), fmt(["-" * w for w in widths])]
lines += [fmt(r) for r in rows]
lines += [fmt(["-" * w for w in widths]), fmt(["total", *map(str, total), ""])]
lines.append("RESULT: " + ("FAILED" if total[1] else "ok"))
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print("\n" + text, end="")
PY
}

trap finish EXIT
trap 'exit 130' INT TERM

# -- 1. environment ------------------------------------------------------------

step "environment"
date -u '+%Y-%m-%d %H:%M:%S UTC'
if compgen -G ".whl/*.whl" >/dev/null; then
	python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
		echo "warning: installing the wheels from .whl/ failed" >&2
	export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
else
	echo "warning: no .whl/ (run scripts/gpu/prepare.sh and carry .whl)" >&2
fi
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi -L
	nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
	nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -n 1
else
	echo "warning: no nvidia-smi" >&2
fi
compgen -G "/usr/local/cuda/lib64/libnvrtc.so*" || echo "warning: no NVRTC in /usr/local/cuda/lib64" >&2
python3 -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
python3 -c 'import tritonclient, pytest; print("tritonclient", tritonclient.__version__ if hasattr(tritonclient, "__version__") else "?", "pytest", pytest.__version__)' ||
	echo "warning: tritonclient or pytest does not import" >&2

BIN="${NEREID_BIN:-}"
if [[ -z "$BIN" ]]; then
	BIN="$ROOT/target/gpu-tests/nereid"
	[[ -x "$BIN" ]] || BIN="$ROOT/target/release/nereid"
fi
if [[ ! -x "$BIN" ]]; then
	echo "error: no nereid binary at $BIN (run scripts/gpu/prepare.sh and carry target/gpu-tests)" >&2
	record "nereid binary" 0 1 0 "missing: $BIN"
	exit 1
fi
"$BIN" --version

# The example repository (CPU models) and model_repository_gpu (the cuda
# backend's models); of their models, those the suite uses.
REPOS=()
REPO_LIST=""
for r in model_repository model_repository_gpu; do
	if [[ -d "$r" ]]; then
		REPOS+=("--model-repository=$ROOT/$r")
		REPO_LIST="${REPO_LIST:+$REPO_LIST:}$ROOT/$r"
	fi
done
MODELS=(simple identity_fp32 simple_cuda identity_cuda preprocess_cuda)
LOAD=()
for m in "${MODELS[@]}"; do
	if compgen -G "model_repository*/$m/config.pbtxt" >/dev/null; then
		LOAD+=("--load-model=$m")
	else
		echo "warning: no model $m in model_repository*/; its tests will fail" >&2
	fi
done

# -- 2. tests ------------------------------------------------------------------

run_rust_tests() {
	local bin="${NEREID_GPU_TEST_BIN:-$ROOT/target/gpu-tests/nereid-lib-tests}" rc
	if [[ ! -x "$bin" ]]; then
		echo "no Rust GPU test binary ($bin); skipped"
		record "rust unit tests (gpu)" 0 0 0 "no test binary"
		return
	fi
	local filters
	read -r -a filters <<<"${NEREID_GPU_TEST_FILTERS:-gpu:: shm:: backend::cuda}"
	# Not for a GPU machine, so skipped and counted as skipped: the
	# without_a_driver tests (they check a machine without a CUDA driver and
	# fail where there is one) and ipc_exporter (a helper process the IPC
	# test starts itself).
	local not_here
	not_here="$("$bin" --list --include-ignored "${filters[@]}" 2>/dev/null |
		grep -E ': test$' | grep -cE 'without_a_driver|ipc_exporter')"
	step "Rust GPU unit tests: $bin --test-threads=1 ${filters[*]}"
	timeout 240 "$bin" --test-threads=1 --include-ignored "${filters[@]}" \
		--skip without_a_driver --skip ipc_exporter >"$LOGS/rust-tests.log" 2>&1
	rc=$?
	tail -n 25 "$LOGS/rust-tests.log"
	# "test result: ok. 12 passed; 0 failed; 3 ignored; ..."
	local line passed failed ignored note
	line="$(grep -E '^test result:' "$LOGS/rust-tests.log" | tail -n 1)"
	passed="$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$line")"
	failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")"
	ignored="$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$line")"
	note="exit $rc; skipped: ${not_here:-0} without_a_driver tests and the IPC helper (not for a GPU machine)"
	if [[ -z "$line" ]]; then
		record "rust unit tests (gpu)" 0 1 "${not_here:-0}" "exit $rc, no test result line"
	else
		((rc != 0 && ${failed:-0} == 0)) && failed=1
		record "rust unit tests (gpu)" "${passed:-0}" "${failed:-0}" "$((${ignored:-0} + ${not_here:-0}))" "$note"
	fi
}

run_pytest() {
	# --exit-on-error=false: a model that fails to load fails its tests
	# instead of stopping the whole suite.
	step "nereid for the suite: ${LOAD[*]}"
	if ! start_server "$LOGS/server.log" "${REPOS[@]}" --allow-client-shm=true --log-verbose=1 \
		--model-control-mode=explicit --exit-on-error=false "${LOAD[@]}"; then
		record "nereid startup" 0 1 0 "see server.log"
		return
	fi
	record "nereid startup" 1 0 0 "$HTTP_URL grpc $GRPC_URL"
	mkdir -p "$LOGS/extra"
	step "pytest tests/gpu"
	# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words by design
	NEREID_GPU_SUITE=1 NEREID_HTTP_URL="$HTTP_URL" NEREID_GRPC_URL="$GRPC_URL" NEREID_METRICS_URL="$METRICS_URL" \
		NEREID_BIN="$BIN" NEREID_MODEL_REPOSITORIES="$REPO_LIST" NEREID_GPU_LOG_DIR="$LOGS/extra" \
		timeout 420 python3 -m pytest tests/gpu -v --junitxml="$LOGS/pytest.xml" ${PYTEST_ARGS:-} \
		>"$LOGS/pytest.log" 2>&1
	local rc=$?
	grep -E '^(FAILED|ERROR)|passed|failed|skipped' "$LOGS/pytest.log" | tail -n 40
	python3 - "$LOGS/pytest.xml" "$SUMMARY" "$rc" <<'PY'
import sys
import xml.etree.ElementTree as ET

xml_path, summary, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
groups = {}
try:
    cases = ET.parse(xml_path).getroot().iter("testcase")
except (OSError, ET.ParseError):
    cases = []
for case in cases:
    group = "pytest " + case.get("classname", "?").rsplit(".", 1)[-1]
    counts = groups.setdefault(group, [0, 0, 0])
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        counts[1] += 1
    elif "skipped" in tags:
        counts[2] += 1
    else:
        counts[0] += 1
with open(summary, "a") as out:
    for group, (p, f, s) in groups.items():
        out.write(f"{group}\t{p}\t{f}\t{s}\t\n")
    if not groups or (rc not in (0, 1) and not any(c[1] for c in groups.values())):
        out.write(f"pytest\t0\t1\t0\tpytest exit {rc} (see pytest.log)\n")
PY
	step "stop nereid (SIGTERM)"
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		record "nereid survived the suite" 0 1 0 "exited early; see server.log"
	fi
	stop_server
	rc=$?
	if ((rc == 0)); then record "nereid clean shutdown" 1 0 0; else record "nereid clean shutdown" 0 1 0 "exit $rc"; fi
}

run_bench() {
	local budget="${BENCH_BUDGET_S:-330}" left
	left=$((500 - (SECONDS - RUN_STARTED)))
	((left < budget)) && budget=$left
	if ((budget < 30)); then
		record "bench (perf_analyzer)" 0 0 1 "no time left in this run"
		return
	fi
	step "nereid for the benchmark"
	if ! start_server "$LOGS/bench-server.log" "${REPOS[@]}" --allow-client-shm=true \
		--model-control-mode=explicit --exit-on-error=false "${LOAD[@]}"; then
		record "bench (perf_analyzer)" 0 1 0 "nereid did not start"
		return
	fi
	step "benches/gpu/perf.sh (budget ${budget}s)"
	NEREID_HTTP_URL="$HTTP_URL" NEREID_GRPC_URL="$GRPC_URL" OUT="$OUT" BENCH_BUDGET_S="$budget" \
		bash benches/gpu/perf.sh
	local rc=$?
	# perf.sh ends its table with "N measured, M failed, K skipped (time budget), S s".
	local counts ok failed skipped
	counts="$(grep -E '^[0-9]+ measured, [0-9]+ failed, [0-9]+ skipped' "$OUT/bench.txt" 2>/dev/null | tail -n 1)"
	ok="$(sed -nE 's/^([0-9]+) measured.*/\1/p' <<<"$counts")"
	failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$counts")"
	skipped="$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$counts")"
	((rc != 0 && ${failed:-0} == 0)) && failed=1
	record "bench (perf_analyzer)" "${ok:-0}" "${failed:-0}" "${skipped:-0}" "points; table in bench.txt"
	stop_server >/dev/null 2>&1
}

if [[ "$MODE" == tests || "$MODE" == all ]]; then
	run_rust_tests
	run_pytest
fi
if [[ "$MODE" == bench || "$MODE" == all ]]; then
	run_bench
fi

# The exit status: non-zero when any group failed (the EXIT trap writes
# the summary and copies the logs).
awk -F'\t' '$3 > 0 { bad = 1 } END { exit bad }' "$SUMMARY"
