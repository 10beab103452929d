#!/usr/bin/env bash
# Runs Triton's own qa/L0_* Python tests, unchanged, against nereid.
#
#   scripts/triton-qa.sh [SUITE...] [-k EXPR] [--list]
#
# The tests come from a local read-only copy of Triton's server repository
# (TRITON_SERVER_REPO, default ../triton-server beside this repository, then
# $HOME/triton-server). Without one the run is skipped, visibly, with exit 0.
# TRITON_QA_REF picks the revision of that copy whose qa/ is run (default
# main when the copy has it, else its checkout; "worktree" forces the
# checkout). NEREID_BIN is the server under test (default
# target/release/nereid). Everything generated (the client's virtual
# environment, Triton's generated models, the suites' model repositories,
# logs and results) lives under target/; results land in
# target/triton-qa/results/. See scripts/triton-qa/runner.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo="${TRITON_SERVER_REPO:-}"
if [[ -z "$repo" ]]; then
	for candidate in "$NEREID_ROOT/../triton-server" "$HOME/triton-server"; do
		if [[ -d "$candidate/qa" ]]; then
			repo="$candidate"
			break
		fi
	done
	repo="${repo:-$NEREID_ROOT/../triton-server}"
fi
if [[ ! -d "$repo/qa/common" ]]; then
	echo "triton-qa: skipped: no local copy of Triton's server repository at $repo (set TRITON_SERVER_REPO)"
	exit 0
fi
repo="$(cd "$repo" && pwd)"

# The revision whose tests run, and the tritonclient release that matches it
# (the tests are written against the client of their own release).
ref="${TRITON_QA_REF:-}"
if [[ -z "$ref" ]]; then
	if git -C "$repo" rev-parse --verify -q main >/dev/null 2>&1; then
		ref=main
	else
		ref=worktree
	fi
fi
at_ref() {
	if [[ "$ref" == worktree ]]; then
		cat "$repo/$1"
	else
		git -C "$repo" show "$ref:$1"
	fi
}
version="$(at_ref TRITON_VERSION)" || die "no revision '$ref' in $repo"
client_version="${version%dev}"
# The onnx release Triton's model generation pins for that revision (newer
# ones write IR versions an older ONNX Runtime refuses).
onnx_version="$(at_ref qa/common/gen_qa_model_repository | sed -n 's/^ONNX_VERSION=//p' | head -1)"
onnx_spec="onnx${onnx_version:+==$onnx_version}"

# The client's virtual environment, one per tritonclient release, from PyPI.
env="$NEREID_ROOT/target/qa-pyenv-$client_version"
requirements="tritonclient[all]==$client_version numpy $onnx_spec pytest pytest-timeout requests psutil"
stamp="$env/.requirements"
if [[ ! -x "$env/bin/python" ]]; then
	python3 -m venv "$env" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
	step "pip install $requirements"
	# shellcheck disable=SC2086
	"$env/bin/python" -m pip install -q --disable-pip-version-check $requirements ||
		die "pip install into $env failed"
	echo "$requirements" >"$stamp"
fi

export PYTHONDONTWRITEBYTECODE=1
exec "$env/bin/python" "$NEREID_ROOT/scripts/triton-qa/runner.py" \
	--triton-repo "$repo" --ref "$ref" --version "$version" "$@"
