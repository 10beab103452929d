#!/usr/bin/env bash
# Load and latency benchmark: `simple` inference on nereid (JSON tensors and
# binary tensors) against a static reply from nginx, measured in the same run
# on the same machine with the same client (wrk).
#
#   benches/load/run.sh [--record]
#
# For each of nginx, nereid JSON and nereid binary it runs
#   wrk -t1 -c1 -d$DURATION --latency   -> p50 / p99 latency at 1 connection
#   wrk -t2 -c8 -d$DURATION             -> requests/s at 8 connections
# and prints the ratios the project aims at: nereid-binary p50 / nginx p50
# <= 1.3 and nereid-binary rps / nginx rps >= 0.5.
#
# Environment: DURATION (seconds per wrk run, default 10), LOOPS (nginx
# worker_processes and nereid --http-thread-count, default: the core count),
# NEREID_BIN (a prebuilt binary to measure instead of building one).
# --record appends the results, the machine and the date to BENCHMARKS.md.
# Needs the Debian packages wrk and nginx-light (installed when missing and
# root). Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$NEREID_ROOT"

RECORD=""
[[ "${1:-}" == "--record" ]] && RECORD=1
DURATION="${DURATION:-10}"
LOOPS="${LOOPS:-$(nproc)}"
HERE="$NEREID_ROOT/benches/load"
WORK="$(mktemp -d)"
OUT="$NEREID_ROOT/target/bench"
mkdir -p "$OUT"
NGINX_PID=""

cleanup() {
	[[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	stop_nereid >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debian_tool curl curl
need_debian_tool wrk wrk
PATH="$PATH:/usr/sbin"
need_debian_tool nginx nginx-light

if [[ -n "${NEREID_BIN:-}" ]]; then
	BIN="$NEREID_BIN"
else
	step "cargo build --release"
	cargo build --release --locked --bin nereid
	BIN="$NEREID_ROOT/target/release/nereid"
fi

step "start nereid ($LOOPS event loops)"
start_nereid "$BIN" "$OUT/nereid.log" --model-repository "$NEREID_ROOT/model_repository" \
	--http-thread-count "$LOOPS" --log-verbose 0 || die "nereid did not start"
NEREID_URL="http://$NEREID_ADDR/v2/models/simple/infer"

# The two request bodies: `simple` with INPUT0 = 0..15 and INPUT1 = all
# ones, as JSON tensors, and as binary tensors (outputs binary too).
BIN_HDR_LEN="$(python3 - "$WORK" <<'PY'
import json, struct, sys
work = sys.argv[1]
ints = lambda v: [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": d}
                  for n, d in zip(("INPUT0", "INPUT1"), v)]
doc = {"inputs": ints([list(range(16)), [1] * 16]),
       "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1"}]}
open(f"{work}/simple.json", "wb").write(json.dumps(doc, separators=(",", ":")).encode())
head = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32",
                    "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in ("OUTPUT0", "OUTPUT1")]}
head = json.dumps(head, separators=(",", ":")).encode()
tensors = struct.pack("<16i", *range(16)) + struct.pack("<16i", *[1] * 16)
open(f"{work}/simple.bin", "wb").write(head + tensors)
print(len(head))
PY
)"

step "check both requests once"
code="$(curl -sS -o "$WORK/bin.reply" -D "$WORK/bin.headers" -w '%{http_code}' -X POST \
	-H "Inference-Header-Content-Length: $BIN_HDR_LEN" \
	--data-binary @"$WORK/simple.bin" "$NEREID_URL")"
[[ "$code" == 200 ]] || die "binary request: HTTP $code: $(head -c 300 "$WORK/bin.reply")"
code="$(curl -sS -o "$WORK/json.reply" -w '%{http_code}' -X POST \
	-H "Content-Type: application/json" \
	--data-binary @"$WORK/simple.json" "$NEREID_URL")"
[[ "$code" == 200 ]] || die "JSON request: HTTP $code: $(head -c 300 "$WORK/json.reply")"
python3 - "$WORK/json.reply" <<'PY' || die "JSON reply is wrong"
import json, sys
d = json.load(open(sys.argv[1]))
o = {x["name"]: x["data"] for x in d["outputs"]}
assert o["OUTPUT0"] == list(range(1, 17)) and o["OUTPUT1"] == list(range(-1, 15)), o
PY
REPLY_BYTES="$(stat -c %s "$WORK/bin.reply")"
echo "binary reply: $REPLY_BYTES bytes; JSON reply: $(stat -c %s "$WORK/json.reply") bytes"

step "start nginx ($LOOPS workers, static reply of $REPLY_BYTES bytes)"
NGINX_PORT="$(free_port)"
STATIC="$(python3 -c 'import sys; print("x" * (int(sys.argv[1]) - 2))' "$REPLY_BYTES")"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $LOOPS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            default_type application/json;
            return 200 '"$STATIC"';
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 100); do
	curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
	sleep 0.05
done
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || die "nginx did not start: $(cat "$WORK/nginx/error.log")"

to_us() { # wrk latency like 52.00us / 1.23ms / 1.01s -> microseconds
	python3 -c '
import re, sys
v, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", sys.argv[1]).groups()
print(round(float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit], 1))' "$1"
}

# bench NAME URL BODY_FILE [HEADER_LEN]: sets P50_<NAME>, P99_<NAME>, RPS_<NAME>.
bench() {
	local name="$1" url="$2" out script="$HERE/post.lua"
	export BODY_FILE="$3" INFERENCE_HEADER_LENGTH="${4:-}"
	echo "-- $name: wrk -t1 -c1 -d${DURATION}s --latency"
	out="$(wrk -t1 -c1 -d"${DURATION}s" --latency -s "$script" "$url")"
	echo "$out" >"$OUT/wrk-$name-c1.txt"
	check_wrk "$name" "$out"
	printf -v "P50_$name" '%s' "$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
	printf -v "P99_$name" '%s' "$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
	echo "-- $name: wrk -t2 -c8 -d${DURATION}s"
	out="$(wrk -t2 -c8 -d"${DURATION}s" -s "$script" "$url")"
	echo "$out" >"$OUT/wrk-$name-c8.txt"
	check_wrk "$name" "$out"
	printf -v "RPS_$name" '%s' "$(awk '$1 == "Requests/sec:" {print $2}' <<<"$out")"
}
check_wrk() {
	if grep -q 'Non-2xx or 3xx responses' <<<"$2" || grep -q 'Socket errors' <<<"$2"; then
		echo "$2"
		die "$1: wrk saw errors"
	fi
}

step "measure (${DURATION}s per run)"
bench nginx "http://127.0.0.1:$NGINX_PORT/" "$WORK/simple.bin" "$BIN_HDR_LEN"
bench json "$NEREID_URL" "$WORK/simple.json"
bench binary "$NEREID_URL" "$WORK/simple.bin" "$BIN_HDR_LEN"

ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
DATE="$(date -u +%Y-%m-%d)"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
R_P50="$(ratio "$P50_binary" "$P50_nginx")"
R_RPS="$(ratio "$RPS_binary" "$RPS_nginx")"
verdict() { python3 -c 'import sys; a, op, b = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]); print("met" if (a <= b if op == "le" else a >= b) else "NOT met")' "$@"; }

REPORT="$OUT/load.md"
cat >"$REPORT" <<EOF
### $DATE — commit $COMMIT

Machine: $CPU, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo).
nginx $(nginx -v 2>&1 | sed 's|.*/||') with $LOOPS workers; nereid with $LOOPS event loops; wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), ${DURATION}s per run, client on the same machine over 127.0.0.1.

| target | request | p50 @1 conn | p99 @1 conn | req/s @8 conn |
| --- | --- | ---: | ---: | ---: |
| nginx | static reply of $REPLY_BYTES bytes (same binary request posted) | ${P50_nginx} µs | ${P99_nginx} µs | ${RPS_nginx} |
| nereid | \`simple\`, JSON tensors | ${P50_json} µs | ${P99_json} µs | ${RPS_json} |
| nereid | \`simple\`, binary tensors | ${P50_binary} µs | ${P99_binary} µs | ${RPS_binary} |

- nereid binary p50 / nginx p50 = **$R_P50** (aim ≤ 1.3: $(verdict "$R_P50" le 1.3))
- nereid binary req/s / nginx req/s = **$R_RPS** (aim ≥ 0.5: $(verdict "$R_RPS" ge 0.5))
- nereid JSON p50 / nginx p50 = $(ratio "$P50_json" "$P50_nginx"); nereid JSON req/s / nginx req/s = $(ratio "$RPS_json" "$RPS_nginx")
EOF

step "results"
cat "$REPORT"
echo "(raw wrk output in $OUT/)"
if [[ -n "$RECORD" ]]; then
	{
		echo
		cat "$REPORT"
	} >>"$NEREID_ROOT/BENCHMARKS.md"
	echo "appended to BENCHMARKS.md"
fi
