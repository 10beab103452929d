# Shared helpers for scripts/*.sh and benches/load/run.sh (sourced, not run).

# The repository root, whatever the caller's working directory.
NEREID_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# free_port: prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# need_debian_tool TOOL PACKAGE: installs PACKAGE with apt-get when TOOL is
# missing and we are root; fails with a clear message otherwise.
need_debian_tool() {
	local tool="$1" package="$2"
	command -v "$tool" >/dev/null 2>&1 && return 0
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "installing $package (for $tool)"
		if [[ -z "${NEREID_APT_UPDATED:-}" ]]; then
			apt-get update -qq >/dev/null || true
			NEREID_APT_UPDATED=1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null ||
			die "apt-get install $package failed"
	fi
	command -v "$tool" >/dev/null 2>&1 || die "$tool is needed: install the Debian package $package"
}

# ensure_pyenv: the Python virtual environment at target/pyenv with the
# end-to-end suite's requirements; reinstalls only when they change.
ensure_pyenv() {
	local env="$NEREID_ROOT/target/pyenv" req="$NEREID_ROOT/tests/python/requirements.txt"
	local stamp="$env/.requirements.sha256" want
	want="$(sha256sum "$req" | cut -d' ' -f1)"
	if [[ ! -x "$env/bin/python" ]]; then
		python3 -m venv "$env" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
	fi
	if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
		"$env/bin/python" -m pip install -q --disable-pip-version-check -r "$req" ||
			die "pip install -r $req failed"
		echo "$want" >"$stamp"
	fi
	PY="$env/bin/python"
}

# pip_python: sets PYTHON, unless it is set, to target/pyenv's interpreter
# when there is one, else python3; dies unless it has pip (for scripts that
# download wheels from PyPI).
pip_python() {
	if [[ -z "${PYTHON:-}" ]]; then
		PYTHON=python3
		[[ -x "$NEREID_ROOT/target/pyenv/bin/python" ]] && PYTHON="$NEREID_ROOT/target/pyenv/bin/python"
	fi
	"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (Debian: apt-get install python3-pip)"
}

# release_binary: sets BIN to $NEREID_BIN when set, else builds and picks
# the release binary (for the benchmark scripts).
release_binary() {
	if [[ -n "${NEREID_BIN:-}" ]]; then
		BIN="$NEREID_BIN"
	else
		step "cargo build --release"
		cargo build --release --locked --bin nereid
		BIN="$NEREID_ROOT/target/release/nereid"
	fi
}

# start_nereid BIN LOG ARGS...: starts nereid on free loopback HTTP and gRPC
# ports (and a free metrics port), waits up to NEREID_READY_TIMEOUT seconds
# (default 60) for /v2/health/ready, and sets NEREID_PID, NEREID_ADDR (HTTP),
# NEREID_GRPC_ADDR and NEREID_METRICS_ADDR. On failure prints the server
# log's tail and returns 1.
start_nereid() {
	local bin="$1" log="$2"
	shift 2
	local port grpc_port metrics_port
	port="$(free_port)"
	grpc_port="$(free_port)"
	metrics_port="$(free_port)"
	"$bin" --http-address 127.0.0.1 --http-port "$port" \
		--grpc-address 127.0.0.1 --grpc-port "$grpc_port" \
		--metrics-port "$metrics_port" "$@" >"$log" 2>&1 &
	NEREID_PID=$!
	NEREID_ADDR="127.0.0.1:$port"
	NEREID_GRPC_ADDR="127.0.0.1:$grpc_port"
	NEREID_METRICS_ADDR="127.0.0.1:$metrics_port"
	local deadline=$((SECONDS + ${NEREID_READY_TIMEOUT:-60}))
	while ((SECONDS < deadline)); do
		if ! kill -0 "$NEREID_PID" 2>/dev/null; then
			wait "$NEREID_PID"
			echo "nereid exited with $? before it was ready; log tail:" >&2
			tail -n 40 "$log" >&2
			return 1
		fi
		if curl -sf -o /dev/null --max-time 1 "http://$NEREID_ADDR/v2/health/ready"; then
			return 0
		fi
		sleep 0.1
	done
	echo "nereid was not ready on $NEREID_ADDR within ${NEREID_READY_TIMEOUT:-60}s; log tail:" >&2
	tail -n 40 "$log" >&2
	return 1
}

# stop_nereid: SIGTERM, then SIGKILL after 20 s. Returns nereid's exit status
# (143 means it died of the SIGTERM instead of shutting down).
stop_nereid() {
	[[ -n "${NEREID_PID:-}" ]] || return 0
	local pid="$NEREID_PID" rc killed=0
	NEREID_PID=""
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "nereid did not exit within 20 s of SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null
		killed=1
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	((killed)) && rc=137
	return "$rc"
}
