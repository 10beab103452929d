#!/usr/bin/env bash
# Builds the release binary and serves the example repository on port 8000
# (Triton's default). Extra arguments go to nereid, e.g.
#   scripts/serve.sh --http-port 9000 --log-verbose 1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bin nereid
# The ONNX models need ONNX Runtime's library: fetched once into the cache.
bash scripts/fetch-onnxruntime.sh >/dev/null
# The `ocr` ensemble's PP-OCR models: fetched once, then found in place.
bash scripts/fetch-ocr-models.sh
# The GPU models (the `cuda` backend) need a CUDA driver: served when one is
# installed.
repositories=(--model-repository model_repository)
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	repositories+=(--model-repository model_repository_gpu)
fi
exec target/release/nereid "${repositories[@]}" "$@"
