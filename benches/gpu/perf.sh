#!/usr/bin/env bash
# perf_analyzer matrix against a running nereid on a GPU machine (run by
# `scripts/gpu/run.sh bench`, which starts the server and sets the URLs):
#
#   simple, simple_cuda  x  http, grpc  x  shared memory none/system/cuda
#                        x  concurrency 1, 8
#   identity_cuda with CUDA shm, INPUT0 of 64 B .. 16 MiB, concurrency 1,
#                        http and grpc (latency should stay flat)
#
# Each point: 2 s measurement windows, stable within 50 % over 3 windows,
# at most 5 windows; p50/p99 from perf_analyzer's CSV, with the server-side
# breakdown (queue, compute input/infer/output) it reads from the statistics
# extension. One table to stdout and $OUT/bench.txt; the per-point logs stay
# in a scratch directory. Points left when BENCH_BUDGET_S (default 330)
# seconds have passed are skipped, not run.
#
# Environment: NEREID_HTTP_URL, NEREID_GRPC_URL (host:port, required);
# OUT (default target/gpu-out); PERF_ANALYZER (the binary; default: the
# one inside the perf_analyzer wheel on PYTHONPATH); BENCH_BUDGET_S;
# BENCH_INTERVAL_MS (default 2000).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${NEREID_HTTP_URL:?set NEREID_HTTP_URL (scripts/gpu/run.sh bench does)}"
: "${NEREID_GRPC_URL:?set NEREID_GRPC_URL (scripts/gpu/run.sh bench does)}"
OUT_DIR="${OUT:-$ROOT/target/gpu-out}"
BUDGET="${BENCH_BUDGET_S:-330}"
INTERVAL="${BENCH_INTERVAL_MS:-2000}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d /tmp/nereid-bench.XXXXXX)"

# The wheel's console script drops perf_analyzer's exit status, so the
# binary inside the wheel is called directly.
PA="${PERF_ANALYZER:-}"
if [[ -z "$PA" ]]; then
	PA="$(python3 -c 'import os, perf_analyzer; print(os.path.join(os.path.dirname(perf_analyzer.__file__), "bin", "perf_analyzer"))' 2>/dev/null)"
fi
if [[ ! -x "$PA" ]]; then
	echo "error: no perf_analyzer binary (install the wheel from .whl/ or set PERF_ANALYZER)" >&2
	exit 1
fi

ROWS="$WORK/rows.tsv"
: >"$ROWS"
started=$SECONDS
n=0

# point MODEL PROTO SHM SIZE CONC [perf_analyzer args...]: measures one
# point and appends "model proto shm size conc status csv log" to ROWS.
point() {
	local model="$1" proto="$2" shm="$3" size="$4" conc="$5"
	shift 5
	n=$((n + 1))
	local tag="$n-$model-$proto-$shm-$size-c$conc"
	local csv="$WORK/$tag.csv" log="$WORK/$tag.log" url status
	if ((SECONDS - started >= BUDGET)); then
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$proto" "$shm" "$size" "$conc" skipped - - >>"$ROWS"
		return
	fi
	url="$NEREID_HTTP_URL"
	[[ "$proto" == grpc ]] && url="$NEREID_GRPC_URL"
	timeout 75 "$PA" -m "$model" -u "$url" -i "$proto" \
		--concurrency-range "$conc:$conc" --measurement-interval "$INTERVAL" \
		--stability-percentage 50 --max-trials 5 --shared-memory "$shm" \
		-f "$csv" "$@" >"$log" 2>&1
	status=$?
	if ((status == 0)) && [[ -s "$csv" ]]; then status=ok; else status="failed($status)"; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$proto" "$shm" "$size" "$conc" "$status" "$csv" "$log" >>"$ROWS"
	printf '  %-13s %-4s %-6s %-6s c%-2s %s (%ss)\n' "$model" "$proto" "$shm" "$size" "$conc" "$status" "$((SECONDS - started))" >&2
}

echo "perf_analyzer: $("$PA" --version 2>&1 | head -n 1)" >&2
for model in simple simple_cuda; do
	for proto in http grpc; do
		for shm in none system cuda; do
			for conc in 1 8; do
				if [[ "$shm" == none ]]; then
					point "$model" "$proto" "$shm" 64B "$conc"
				else
					point "$model" "$proto" "$shm" 64B "$conc" --output-shared-memory-size=64
				fi
			done
		done
	done
done
for bytes in 64 4096 65536 1048576 16777216; do
	case "$bytes" in
	64) size=64B ;; 4096) size=4KiB ;; 65536) size=64KiB ;; 1048576) size=1MiB ;; *) size=16MiB ;;
	esac
	for proto in grpc http; do
		point identity_cuda "$proto" cuda "$size" 1 --shape "INPUT0:$((bytes / 4))" \
			--output-shared-memory-size="$bytes"
	done
done

python3 - "$ROWS" "$OUT_DIR/bench.txt" "$((SECONDS - started))" <<'PY'
import csv
import sys

rows_path, out_path, elapsed = sys.argv[1], sys.argv[2], sys.argv[3]
header = ["model", "proto", "shm", "size", "conc", "p50 us", "p99 us", "infer/s",
          "queue us", "compute in/infer/out us", "status"]
table, failures = [], []
for line in open(rows_path):
    model, proto, shm, size, conc, status, csv_path, log_path = line.rstrip("\n").split("\t")
    cells = {}
    if status == "ok":
        with open(csv_path) as f:
            records = list(csv.DictReader(f))
        cells = records[-1] if records else {}

    def col(name):
        value = cells.get(name)
        if value in (None, ""):
            return "-"
        try:
            return f"{float(value):.0f}" if name != "Inferences/Second" else f"{float(value):.1f}"
        except ValueError:
            return value

    compute = "/".join(col(c) for c in ("Server Compute Input", "Server Compute Infer", "Server Compute Output"))
    table.append([model, proto, shm, size, conc, col("p50 latency"), col("p99 latency"),
                  col("Inferences/Second"), col("Server Queue"), compute, status])
    if status.startswith("failed"):
        try:
            tail = open(log_path, errors="replace").read().strip().splitlines()[-6:]
        except OSError:
            tail = ["(no log)"]
        failures.append(f"{model} {proto} shm={shm} size={size} c{conc}: {status}\n    " + "\n    ".join(tail))

widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]
fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in table]
ok = sum(1 for r in table if r[-1] == "ok")
skipped = sum(1 for r in table if r[-1] == "skipped")
lines.append(f"\n{ok} measured, {len(failures)} failed, {skipped} skipped (time budget), {elapsed} s")
if failures:
    lines.append("\nfailed points (perf_analyzer log tails):")
    lines.extend(failures)
text = "\n".join(lines) + "\n"
open(out_path, "w").write(text)
print(text, end="")
sys.exit(1 if failures else 0)
PY
rc=$?
rm -rf "$WORK"
exit "$rc"
