#!/usr/bin/env bash
# Load and latency benchmark: `simple` inference on nereid (JSON tensors and
# binary tensors over HTTP/1.1, raw tensors over gRPC) against a static reply
# from nginx, measured in the same run on the same machine.
#
#   benches/load/run.sh [--record]
#
# For each of nginx, nereid JSON and nereid binary it runs
#   wrk -t1 -c1 -d$DURATION --latency   -> p50 / p99 latency at 1 connection
#   wrk -t2 -c8 -d$DURATION             -> requests/s at 8 connections
# and for nereid gRPC (ModelInfer with raw_input_contents, a prebuilt body:
# the 5-byte gRPC prefix and the encoded ModelInferRequest)
#   h2load -c1 -m1 -D$DURATION          -> p50 / p99 latency at 1 stream
#   h2load -t2 -c8 -m8 -D$DURATION      -> requests/s at 8 connections x 8 streams
# and prints the ratios the project aims at: nereid-binary p50 / nginx p50
# <= 1.3, nereid-binary rps / nginx rps >= 0.5, gRPC p50 / HTTP-binary p50
# <= 1.2 and gRPC rps / HTTP-binary rps (8 connections) > 1.
#
# Environment: DURATION (seconds per wrk run, default 10), LOOPS (nginx
# worker_processes and nereid --http-thread-count, default: the core count),
# NEREID_BIN (a prebuilt binary to measure instead of building one).
# --record appends the results, the machine and the date to BENCHMARKS.md.
# Needs the Debian packages wrk, nginx-light and nghttp2-client (h2load)
# (installed when missing and root). Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
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
need_debian_tool h2load nghttp2-client

release_binary

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

# The gRPC body: ModelInferRequest{model_name, inputs, raw_input_contents},
# protobuf-encoded by hand (field numbers of proto/grpc_service.proto), in a
# gRPC length-prefixed message.
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload
tensor = lambda name: (field(1, name) + field(2, b"INT32")
                       + field(3, varint(1) + varint(16)))
request = (field(1, b"simple") + field(5, tensor(b"INPUT0")) + field(5, tensor(b"INPUT1"))
           + field(7, struct.pack("<16i", *range(16))) + field(7, struct.pack("<16i", *[1] * 16)))
open(f"{work}/simple.grpc", "wb").write(b"\0" + struct.pack(">I", len(request)) + request)
print(len(head))
PY
)"
GRPC_URL="http://$NEREID_GRPC_ADDR/inference.GRPCInferenceService/ModelInfer"

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
curl -sS --http2-prior-knowledge -o "$WORK/grpc.reply" -D "$WORK/grpc.headers" \
	-H "content-type: application/grpc" -H "te: trailers" \
	--data-binary @"$WORK/simple.grpc" "$GRPC_URL" || die "gRPC request failed"
grep -qi '^grpc-status: 0' "$WORK/grpc.headers" ||
	die "gRPC request: $(cat "$WORK/grpc.headers")"
python3 - "$WORK/grpc.reply" <<'PY' || die "gRPC reply is wrong"
import struct, sys
d = open(sys.argv[1], "rb").read()
assert d[0] == 0 and struct.unpack(">I", d[1:5])[0] == len(d) - 5, d[:5]
# raw_output_contents (field 6): OUTPUT0 = 1..16, OUTPUT1 = -1..14
want = [struct.pack("<16i", *range(1, 17)), struct.pack("<16i", *range(-1, 15))]
assert all(b"\x32\x40" + w in d for w in want), d
PY
echo "gRPC reply: $(stat -c %s "$WORK/grpc.reply") bytes"
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

# h2load_p50_p99 LOG: p50 and p99 in microseconds from h2load's
# --log-file (start time, HTTP status, elapsed microseconds per request).
h2load_p50_p99() {
	python3 - "$1" <<'PY'
import sys
lat = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"{pick(0.5):.1f} {pick(0.99):.1f}")
PY
}

# bench_grpc: sets P50_grpc, P99_grpc (one stream) and RPS_grpc (8
# connections x 8 streams); also P50_h1same: the HTTP/1.1 binary request
# timed by the same client (h2load --h1), so that the client's own cost
# cancels out of that comparison.
bench_grpc() {
	local out
	local -a args=(-H "content-type: application/grpc" -H "te: trailers" -d "$WORK/simple.grpc")
	echo "-- grpc: h2load -c1 -m1 -D${DURATION}"
	rm -f "$OUT/h2load-grpc-c1.log" "$OUT/h2load-h1-c1.log"
	out="$(h2load -c1 -m1 -t1 -D"$DURATION" --warm-up-time=1 "${args[@]}" \
		--log-file="$OUT/h2load-grpc-c1.log" "$GRPC_URL")"
	echo "$out" >"$OUT/h2load-grpc-c1.txt"
	check_h2load "$out"
	read -r P50_grpc P99_grpc < <(h2load_p50_p99 "$OUT/h2load-grpc-c1.log")
	echo "-- binary over HTTP/1.1, same client: h2load --h1 -c1 -D${DURATION}"
	out="$(h2load --h1 -c1 -m1 -t1 -D"$DURATION" --warm-up-time=1 \
		-H "Inference-Header-Content-Length: $BIN_HDR_LEN" -d "$WORK/simple.bin" \
		--log-file="$OUT/h2load-h1-c1.log" "$NEREID_URL")"
	echo "$out" >"$OUT/h2load-h1-c1.txt"
	check_h2load "$out"
	read -r P50_h1same _ < <(h2load_p50_p99 "$OUT/h2load-h1-c1.log")
	echo "-- grpc: h2load -t2 -c8 -m8 -D${DURATION}"
	out="$(h2load -c8 -m8 -t2 -D"$DURATION" --warm-up-time=1 "${args[@]}" "$GRPC_URL")"
	echo "$out" >"$OUT/h2load-grpc-c8m8.txt"
	check_h2load "$out"
	RPS_grpc="$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) print $i}' <<<"$out" | tr -d ',')"
}
check_h2load() {
	# Every request must have been answered 2xx (gRPC errors would show in
	# the check above; here: transport failures and non-200 answers).
	if ! grep -Eq 'requests: [0-9]+ total, [0-9]+ started, ([0-9]+) done, \1 succeeded, 0 failed, 0 errored' <<<"$1"; then
		echo "$1"
		die "h2load saw failures"
	fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
step "measure (${DURATION}s per run; load average $LOAD_BEFORE)"
bench nginx "http://127.0.0.1:$NGINX_PORT/" "$WORK/simple.bin" "$BIN_HDR_LEN"
bench json "$NEREID_URL" "$WORK/simple.json"
bench binary "$NEREID_URL" "$WORK/simple.bin" "$BIN_HDR_LEN"
bench_grpc

ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
DATE="$(date -u +%Y-%m-%d)"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
R_P50="$(ratio "$P50_binary" "$P50_nginx")"
R_RPS="$(ratio "$RPS_binary" "$RPS_nginx")"
R_GRPC_P50="$(ratio "$P50_grpc" "$P50_binary")"
R_GRPC_RPS="$(ratio "$RPS_grpc" "$RPS_binary")"
verdict() { python3 -c 'import sys, operator; a, op, b = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]); print("met" if getattr(operator, op)(a, b) else "NOT met")' "$@"; }

REPORT="$OUT/load.md"
cat >"$REPORT" <<EOF
### $DATE — commit $COMMIT

Machine: $CPU, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo).
nginx $(nginx -v 2>&1 | sed 's|.*/||') with $LOOPS workers; nereid with $LOOPS event loops per endpoint; wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') and h2load $(h2load --version 2>&1 | awk '{print $NF; exit}'), ${DURATION}s per run, client on the same machine over 127.0.0.1. Load average before the run: $LOAD_BEFORE.

| target | request | p50 @1 conn | p99 @1 conn | req/s @8 conn |
| --- | --- | ---: | ---: | ---: |
| nginx | static reply of $REPLY_BYTES bytes (same binary request posted) | ${P50_nginx} µs | ${P99_nginx} µs | ${RPS_nginx} |
| nereid | \`simple\`, JSON tensors | ${P50_json} µs | ${P99_json} µs | ${RPS_json} |
| nereid | \`simple\`, binary tensors | ${P50_binary} µs | ${P99_binary} µs | ${RPS_binary} |
| nereid gRPC (h2c) | \`simple\` ModelInfer, raw tensors; 1 stream / 8 conn × 8 streams | ${P50_grpc} µs | ${P99_grpc} µs | ${RPS_grpc} |

- nereid binary p50 / nginx p50 = **$R_P50** (aim ≤ 1.3: $(verdict "$R_P50" le 1.3))
- nereid binary req/s / nginx req/s = **$R_RPS** (aim ≥ 0.5: $(verdict "$R_RPS" ge 0.5))
- nereid JSON p50 / nginx p50 = $(ratio "$P50_json" "$P50_nginx"); nereid JSON req/s / nginx req/s = $(ratio "$RPS_json" "$RPS_nginx")
- gRPC p50 / HTTP binary p50 = **$R_GRPC_P50** (aim ≤ 1.2: $(verdict "$R_GRPC_P50" le 1.2)); with both timed by h2load (HTTP/1.1 binary p50 ${P50_h1same} µs under \`h2load --h1\`): $(ratio "$P50_grpc" "$P50_h1same")
- gRPC req/s (8 conn × 8 streams) / HTTP binary req/s (8 conn) = **$R_GRPC_RPS** (aim > 1: $(verdict "$R_GRPC_RPS" gt 1))
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
