#!/usr/bin/env bash
# curl against a running nereid: the binary tensor extension the way Triton's
# documentation shows it, 100-continue, chunked uploads, compression, HEAD,
# status codes, and garbage on a raw socket.
#
#   tests/curl/run.sh [host:port]        (default 127.0.0.1:8000)
#
# Needs curl, python3 (standard library only, to build bodies and read JSON)
# and bash's /dev/tcp. Ends with "N passed, N failed"; exits non-zero on any
# failure.
set -uo pipefail

ADDR="${1:-127.0.0.1:8000}"
URL="http://$ADDR"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
failures=()

pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
	failed=$((failed + 1))
	failures+=("$1")
	echo "FAIL - $1"
	shift
	for line in "$@"; do echo "       $line"; done
}

# status "CODE..." NAME -- curl-args...: the request must answer with one of
# the HTTP CODEs.
status() {
	local want="$1" name="$2"
	shift 3
	local got
	got="$(curl -sS -o "$WORK/body" -w '%{http_code}' "$@" 2>"$WORK/err")"
	if [[ " $want " == *" $got "* ]]; then
		pass "$name"
	else
		fail "$name" "expected HTTP $want, got $got" "$(head -c 300 "$WORK/body")" "$(cat "$WORK/err")"
	fi
}

# pyjson FILE EXPR: evaluates a Python expression over the JSON doc `d` of FILE.
pyjson() {
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1],"rb")); print(eval(sys.argv[2]))' "$1" "$2" 2>&1
}

expect_eq() { # NAME GOT WANT [details...]
	local name="$1" got="$2" want="$3"
	shift 3
	if [[ "$got" == "$want" ]]; then pass "$name"; else fail "$name" "expected: $want" "got:      $got" "$@"; fi
}

server_alive() {
	curl -sS -f -o /dev/null --max-time 5 "$URL/v2/health/live"
}

# --- bodies ------------------------------------------------------------------

# The JSON header of a binary-extension request for `simple`: both inputs as
# binary data (16 INT32 = 64 bytes each), OUTPUT0 binary, OUTPUT1 as JSON.
printf '%s' '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}},{"name":"INPUT1","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}},{"name":"OUTPUT1","parameters":{"binary_data":false}}]}' >"$WORK/header.json"
HEADER_LEN=$(stat -c %s "$WORK/header.json")
# INPUT0 = 0..15, INPUT1 = all ones, little-endian int32.
: >"$WORK/input0.bin"
: >"$WORK/input1.bin"
for i in $(seq 0 15); do
	printf "\\x$(printf %02x "$i")\\x00\\x00\\x00" >>"$WORK/input0.bin"
	printf '\x01\x00\x00\x00' >>"$WORK/input1.bin"
done
cat "$WORK/header.json" "$WORK/input0.bin" "$WORK/input1.bin" >"$WORK/body.bin"

# check_simple_response NAME HEADERS_FILE BODY_FILE: OUTPUT0 (binary) must be
# 1..16 and OUTPUT1 (JSON) -1..14.
check_simple_response() {
	local name="$1" headers="$2" body="$3" got
	got="$(python3 - "$headers" "$body" <<'PY' 2>&1
import json, struct, sys
heads = open(sys.argv[1], "rb").read().decode("latin-1").lower()
# The last header block is the final response (after any 100 Continue).
block = heads.strip().split("\r\n\r\n")[-1]
n = [l.split(":", 1)[1].strip() for l in block.split("\r\n") if l.startswith("inference-header-content-length:")]
body = open(sys.argv[2], "rb").read()
n = int(n[0])
doc = json.loads(body[:n])
outs = {o["name"]: o for o in doc["outputs"]}
size = outs["OUTPUT0"]["parameters"]["binary_data_size"]
out0 = list(struct.unpack("<16i", body[n:n + size]))
out1 = outs["OUTPUT1"]["data"]
ok = out0 == list(range(1, 17)) and out1 == list(range(-1, 15)) and len(body) == n + size
print("ok" if ok else f"OUTPUT0={out0} OUTPUT1={out1} body={len(body)} header={n}")
PY
)"
	expect_eq "$name" "$got" "ok"
}

# --- health and metadata -------------------------------------------------------

status 200 "GET /v2/health/live" -- "$URL/v2/health/live"
status 200 "GET /v2/health/ready" -- "$URL/v2/health/ready"
status 200 "GET /v2 (server metadata)" -- "$URL/v2"
expect_eq "server metadata lists binary_tensor_data" \
	"$(pyjson "$WORK/body" '"binary_tensor_data" in d["extensions"]')" "True"
status 200 "GET /v2/models/simple (model metadata)" -- "$URL/v2/models/simple"
expect_eq "model metadata name" "$(pyjson "$WORK/body" 'd["name"]')" "simple"
status 200 "GET /v2/models/simple/versions/1/ready" -- "$URL/v2/models/simple/versions/1/ready"
status 200 "GET /v2/models/simple/config" -- "$URL/v2/models/simple/config"
expect_eq "model config uses proto field names" \
	"$(pyjson "$WORK/body" 'd["input"][0]["data_type"]')" "TYPE_INT32"
status 200 "POST /v2/repository/index (empty body)" -- -X POST "$URL/v2/repository/index"
expect_eq "repository index lists simple as READY" \
	"$(pyjson "$WORK/body" '[m["state"] for m in d if m["name"] == "simple"]')" "['READY']"

# --- shared memory extension (this server runs without --allow-client-shm) ----

status 200 "GET /v2/systemsharedmemory/status" -- "$URL/v2/systemsharedmemory/status"
expect_eq "no system regions" "$(cat "$WORK/body")" "[]"
status 200 "GET /v2/cudasharedmemory/status" -- "$URL/v2/cudasharedmemory/status"
status 404 "GET /v2/systemsharedmemory/region/none/status" -- \
	"$URL/v2/systemsharedmemory/region/none/status"
expect_eq "unknown region named" "$(pyjson "$WORK/body" 'd["error"]')" \
	"Unable to find system shared memory region: 'none'"
status 501 "POST /v2/systemsharedmemory/region/r/register (client shm off)" -- -X POST \
	-d '{"key":"/k","byte_size":64}' "$URL/v2/systemsharedmemory/region/r/register"
expect_eq "refusal names the flag" "$(pyjson "$WORK/body" 'd["error"]')" \
	"Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
status 405 "GET /v2/cudasharedmemory/unregister" -- "$URL/v2/cudasharedmemory/unregister"

# --- binary tensor extension, as in Triton's documentation --------------------

curl -sS -D "$WORK/h1" -o "$WORK/r1" -X POST \
	-H "Content-Type: application/octet-stream" \
	-H "Inference-Header-Content-Length: $HEADER_LEN" \
	--data-binary @"$WORK/body.bin" "$URL/v2/models/simple/infer" 2>"$WORK/err"
check_simple_response "binary-extension infer (Inference-Header-Content-Length: $HEADER_LEN)" "$WORK/h1" "$WORK/r1"

# JSON only.
printf '%s' '{"id":"curl-1","inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},{"name":"INPUT1","shape":[1,16],"datatype":"INT32","data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}' >"$WORK/json.json"
status 200 "JSON infer" -- -X POST -H "Content-Type: application/json" \
	--data-binary @"$WORK/json.json" "$URL/v2/models/simple/infer"
expect_eq "JSON infer: id echoed and OUTPUT0 = INPUT0 + INPUT1" \
	"$(pyjson "$WORK/body" '(d["id"], [o["data"] for o in d["outputs"] if o["name"] == "OUTPUT0"][0])')" \
	"('curl-1', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])"

# Header length 0: the whole body is the tensor of a one-input model. `fault`
# (INT32 [4]) panics in its backend, so reaching it means a 500.
printf '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00' >"$WORK/raw.bin"
status 500 "raw binary body (Inference-Header-Content-Length: 0) reaches the backend" -- \
	-X POST -H "Inference-Header-Content-Length: 0" --data-binary @"$WORK/raw.bin" \
	"$URL/v2/models/fault/infer"

# --- 100-continue -------------------------------------------------------------

curl -sS -v -D "$WORK/h2" -o "$WORK/r2" -X POST \
	-H "Expect: 100-continue" \
	-H "Inference-Header-Content-Length: $HEADER_LEN" \
	--data-binary @"$WORK/body.bin" "$URL/v2/models/simple/infer" 2>"$WORK/v2"
if grep -q '^< HTTP/1.1 100 Continue' "$WORK/v2"; then
	pass "curl -v with Expect: 100-continue shows HTTP/1.1 100 Continue"
else
	fail "curl -v with Expect: 100-continue shows HTTP/1.1 100 Continue" "$(grep '^[<>]' "$WORK/v2" | head -20)"
fi
check_simple_response "100-continue: final response correct" "$WORK/h2" "$WORK/r2"

# A body over 1 MiB: identity_fp32 with 300,000 floats, the tensor JSON-less.
python3 - "$WORK/big.bin" "$WORK/big.len" <<'PY'
import json, struct, sys
n = 300_000
head = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, n], "datatype": "FP32",
                               "parameters": {"binary_data_size": 4 * n}}],
                   "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
data = struct.pack(f"<{n}f", *[float(i % 1000) for i in range(n)])
open(sys.argv[1], "wb").write(head + data)
open(sys.argv[2], "w").write(str(len(head)))
PY
BIG_LEN=$(cat "$WORK/big.len")
curl -sS -v -D "$WORK/h3" -o "$WORK/r3" -X POST \
	-H "Expect: 100-continue" \
	-H "Inference-Header-Content-Length: $BIG_LEN" \
	--data-binary @"$WORK/big.bin" "$URL/v2/models/identity_fp32/infer" 2>"$WORK/v3"
if grep -q '^< HTTP/1.1 100 Continue' "$WORK/v3" && grep -q '^< HTTP/1.1 200' "$WORK/v3"; then
	pass "1.2 MB body with 100-continue: 100 then 200"
else
	fail "1.2 MB body with 100-continue: 100 then 200" "$(grep '^[<>]' "$WORK/v3" | head -20)"
fi
expect_eq "1.2 MB identity: output bytes equal input bytes" \
	"$(tail -c 1200000 "$WORK/r3" | cmp -s - <(tail -c 1200000 "$WORK/big.bin") && echo same || echo differ)" "same"

# --- chunked upload -----------------------------------------------------------

curl -sS -v -D "$WORK/h4" -o "$WORK/r4" -X POST \
	-H "Transfer-Encoding: chunked" \
	-H "Inference-Header-Content-Length: $HEADER_LEN" \
	--data-binary @"$WORK/body.bin" "$URL/v2/models/simple/infer" 2>"$WORK/v4"
if grep -qi '^> Transfer-Encoding: chunked' "$WORK/v4"; then
	check_simple_response "chunked request body" "$WORK/h4" "$WORK/r4"
else
	fail "chunked request body" "curl did not send Transfer-Encoding: chunked"
fi

# --- compression --------------------------------------------------------------

curl -sS --compressed -D "$WORK/h5" -o "$WORK/r5" -X POST \
	-H "Inference-Header-Content-Length: $HEADER_LEN" \
	--data-binary @"$WORK/body.bin" "$URL/v2/models/simple/infer" 2>"$WORK/err"
if grep -qiE '^content-encoding: (gzip|deflate)' "$WORK/h5"; then
	pass "--compressed: response is compressed ($(grep -i '^content-encoding' "$WORK/h5" | tr -d '\r'))"
else
	fail "--compressed: response is compressed" "$(tr -d '\r' <"$WORK/h5")"
fi
check_simple_response "--compressed: decompressed response correct" "$WORK/h5" "$WORK/r5"

curl -sS -D "$WORK/h6" -o "$WORK/r6" -X POST -H "Accept-Encoding: gzip" \
	--data-binary @"$WORK/json.json" "$URL/v2/models/simple/infer" 2>"$WORK/err"
expect_eq "Accept-Encoding: gzip: body is gzip" \
	"$(gzip -dc <"$WORK/r6" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>&1)" "curl-1"

gzip -c "$WORK/body.bin" >"$WORK/body.bin.gz"
curl -sS -D "$WORK/h7" -o "$WORK/r7" -X POST -H "Content-Encoding: gzip" \
	-H "Inference-Header-Content-Length: $HEADER_LEN" \
	--data-binary @"$WORK/body.bin.gz" "$URL/v2/models/simple/infer" 2>"$WORK/err"
check_simple_response "gzip request body (header length counts the decompressed body)" "$WORK/h7" "$WORK/r7"

# Only inference responses are compressed, as Triton does: clients such as
# tritonclient's aio client decompress nothing else.
for path in /v2 /v2/models/simple /v2/models/simple/config; do
	curl -sS -D "$WORK/h8" -o "$WORK/r8" -H "Accept-Encoding: gzip, deflate" "$URL$path" 2>"$WORK/err"
	if grep -qi '^content-encoding' "$WORK/h8"; then
		fail "Accept-Encoding: gzip on GET $path: not compressed" "$(tr -d '\r' <"$WORK/h8")"
	else
		expect_eq "Accept-Encoding: gzip on GET $path: plain JSON" "$(pyjson "$WORK/r8" 'type(d).__name__')" "dict"
	fi
done

# --- HEAD -------------------------------------------------------------------------

for path in /v2 /v2/health/ready /v2/models/simple/config; do
	get_len="$(curl -sS -o /dev/null -w '%{size_download}' "$URL$path")"
	curl -sS -I -o "$WORK/hh" -w '%{http_code} %{size_download}' "$URL$path" >"$WORK/hs" 2>"$WORK/err"
	head_len="$(grep -i '^content-length:' "$WORK/hh" | tr -d '\r' | awk '{print $2}')"
	expect_eq "HEAD $path: 200, GET's Content-Length, no body" "$(cat "$WORK/hs") $head_len" "200 0 $get_len"
done
status 405 "HEAD on infer → 405" -- -I "$URL/v2/models/simple/infer"

# --- status codes ---------------------------------------------------------------

status 404 "unknown path → 404" -- "$URL/v2/does/not/exist"
status 404 "unknown top-level path → 404" -- "$URL/index.html"
status 405 "DELETE /v2/health/live → 405" -- -X DELETE "$URL/v2/health/live"
status 405 "GET on infer → 405" -- "$URL/v2/models/simple/infer"
status "400 404" "ready of an unknown model → 400/404" -- "$URL/v2/models/nope/ready"
status 400 "malformed JSON → 400 (Triton answers 500: its JSON errors are INTERNAL)" -- -X POST -d '{"inputs": [' "$URL/v2/models/simple/infer"
expect_eq "malformed JSON → error body" "$(pyjson "$WORK/body" 'type(d["error"]).__name__')" "str"
status "400 404" "unknown model infer → 400/404" -- -X POST --data-binary @"$WORK/json.json" "$URL/v2/models/nope/infer"

# --- garbage on a raw socket -------------------------------------------------

raw_exchange() { # BYTES-PRINTF-FORMAT → prints what the server answered (5 s max)
	exec 3<>"/dev/tcp/$HOST/$PORT" || return 1
	printf "$1" >&3
	timeout 5 cat <&3 | head -c 2000
	exec 3<&- 3>&-
}
garbage_cases=(
	'binary bytes|\x00\x01\x02garbage\r\n\r\n'
	'not HTTP|HELLO\r\n\r\n'
	'header without colon|GET / HTTP/1.1\r\nNo-Colon-Header\r\n\r\n'
	'bad Content-Length|POST /v2/models/simple/infer HTTP/1.1\r\nContent-Length: abc\r\n\r\n'
	'bad chunk size|POST /v2/models/simple/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'
)
for case in "${garbage_cases[@]}"; do
	label="garbage (${case%%|*})"
	answer="$(raw_exchange "${case#*|}" | head -1 | tr -d '\r')"
	if [[ "$answer" =~ ^HTTP/1\.[01]\ 4[0-9][0-9] || -z "$answer" ]]; then
		pass "$label → ${answer:-connection closed}"
	else
		fail "$label → 4xx or close" "got: $answer"
	fi
	if server_alive; then pass "server alive after $label"; else fail "server alive after $label"; fi
done

# --- summary ---------------------------------------------------------------------

echo
if ((failed)); then
	echo "failed:"
	printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
