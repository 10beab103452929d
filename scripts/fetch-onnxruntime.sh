#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library (libonnxruntime.so) for nereid's
# onnxruntime backend and prints its path. The library comes out of the
# `onnxruntime` wheel on PyPI (its onnxruntime/capi/ directory carries it);
# nothing is built or linked at compile time.
#
#   scripts/fetch-onnxruntime.sh            # CPU build, the pinned version
#   NEREID_ONNXRUNTIME_PACKAGE=onnxruntime-gpu scripts/fetch-onnxruntime.sh
#                                           # build with the CUDA and TensorRT
#                                           # execution providers
#
# The library lands in ${XDG_CACHE_HOME:-$HOME/.cache}/nereid/onnxruntime/
# <version>[-gpu]/, where nereid looks for the CPU build by default. Running
# it again downloads nothing. Only stdout carries the path; progress goes to
# stderr.
#
# Environment:
#   NEREID_ONNXRUNTIME_VERSION   wheel version (default: the one nereid pins)
#   NEREID_ONNXRUNTIME_PACKAGE   onnxruntime (default) or onnxruntime-gpu
#   PYTHON                       interpreter whose pip downloads the wheel
#                                (default: target/pyenv's, else python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Keep in step with backend::onnx::ONNXRUNTIME_VERSION.
VERSION="${NEREID_ONNXRUNTIME_VERSION:-1.31.1}"
PACKAGE="${NEREID_ONNXRUNTIME_PACKAGE:-onnxruntime}"
case "$PACKAGE" in
onnxruntime) suffix="" ;;
onnxruntime-gpu) suffix="-gpu" ;;
*) die "NEREID_ONNXRUNTIME_PACKAGE must be onnxruntime or onnxruntime-gpu, not '$PACKAGE'" ;;
esac

dir="${XDG_CACHE_HOME:-$HOME/.cache}/nereid/onnxruntime/$VERSION$suffix"
lib="$dir/libonnxruntime.so"
if [[ -e "$lib" ]]; then
	echo "$lib"
	exit 0
fi

pip_python

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
arch="$(uname -m)"
echo "downloading $PACKAGE==$VERSION ($arch) from PyPI" >&2
# The shared library does not depend on the Python version, so any one
# CPython wheel of the release will do; pin one so the choice is stable.
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
	--implementation cp --python-version 3.12 \
	--platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" \
	--platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
	-d "$tmp" "$PACKAGE==$VERSION" >&2 ||
	die "pip download $PACKAGE==$VERSION failed"
wheel="$(ls "$tmp"/*.whl)"

"$PYTHON" - "$wheel" "$tmp/lib" <<'EOF' || die "extracting the library from $wheel failed"
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("lib") and ".so" in base:
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
EOF
real="$(cd "$tmp/lib" && ls libonnxruntime.so.* 2>/dev/null | head -n1)"
[[ -n "$real" ]] || die "$wheel holds no onnxruntime/capi/libonnxruntime.so.*"
ln -s "$real" "$tmp/lib/libonnxruntime.so"

# Publish the whole directory in one rename, so a concurrent or interrupted
# run never leaves a half-written library behind.
mkdir -p "$(dirname "$dir")"
if ! mv -T "$tmp/lib" "$dir" 2>/dev/null; then
	[[ -e "$lib" ]] || die "could not move the library into $dir"
fi
echo "ONNX Runtime $VERSION ($PACKAGE) is in $dir" >&2
echo "$lib"
