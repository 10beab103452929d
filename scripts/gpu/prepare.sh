#!/usr/bin/env bash
# Prepares, on the CPU machine, everything scripts/gpu/run.sh needs on the
# GPU machine (which has no Rust and no network):
#
#   target/gpu-tests/nereid             the release server, debug info stripped
#   target/gpu-tests/nereid-lib-tests   the release build of the library's
#                                       unit tests, debug info stripped
#   .whl/                               tritonclient + perf_analyzer (through
#                                       /work/shared/gpu/fetch-wheels.sh) and
#                                       pytest + pytest-timeout, for Python 3.12
#
# and prints the `carry` list with its size, which must stay within 64 MiB
# (symbols are kept, so backtraces still name functions). target/ is in
# .gitignore; .whl/ goes to .git/info/exclude.
#
# Environment: FETCH_WHEELS (default /work/shared/gpu/fetch-wheels.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$NEREID_ROOT"

DEST=target/gpu-tests
LIMIT=$((64 << 20))
mkdir -p "$DEST"

step "cargo build --release"
cargo build --release --locked --bin nereid
objcopy --strip-debug target/release/nereid "$DEST/nereid"

step "cargo test --release --no-run --lib"
# The executable's path comes from cargo's JSON messages (its name carries
# a hash).
tests_bin="$(cargo test --release --locked --no-run --lib --message-format=json |
	python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]]
print(exe[-1] if exe else "")
')"
[[ -n "$tests_bin" && -x "$tests_bin" ]] || die "cargo did not report the library's test executable"
objcopy --strip-debug "$tests_bin" "$DEST/nereid-lib-tests"

step "wheels (.whl)"
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
if ! compgen -G ".whl/tritonclient-*.whl" >/dev/null || ! compgen -G ".whl/perf_analyzer-*.whl" >/dev/null; then
	bash "${FETCH_WHEELS:-/work/shared/gpu/fetch-wheels.sh}"
fi
# The GPU machine's Python has no pytest; these are pure-Python wheels.
if ! compgen -G ".whl/pytest_timeout-*.whl" >/dev/null || ! compgen -G ".whl/pytest-*.whl" >/dev/null; then
	pip_python
	"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		-d .whl pytest pluggy iniconfig packaging pytest-timeout
fi

step "carry"
carry=("$DEST" .whl)
total="$(du -cb "${carry[@]}" | tail -n 1 | cut -f1)"
du -sh "${carry[@]}"
printf 'carry: ["%s", "%s"]  total %d bytes (%.1f MiB of 64)\n' "${carry[0]}" "${carry[1]}" "$total" \
	"$(python3 -c "print($total / 1048576)")"
((total <= LIMIT)) || die "the carry list is $total bytes, over the 64 MiB a device call carries"
echo "then, on the device: bash scripts/gpu/run.sh tests   (and: bash scripts/gpu/run.sh bench)"
