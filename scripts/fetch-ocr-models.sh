#!/usr/bin/env bash
# Fetches the PP-OCR networks of the `ocr` ensemble into model_repository/.
# They come out of the Apache-2.0 `rapidocr-onnxruntime` wheel on PyPI
# (rapidocr_onnxruntime/models/):
#
#   ocr_det/1/model.onnx   PP-OCRv4 text detection (DB)
#   ocr_cls/1/model.onnx   PP-OCR mobile v2.0 text direction classifier
#   ocr_rec/1/model.onnx   PP-OCRv4 text recognition (CTC)
#   ocr_rec_postprocess/1/keys.txt
#                          the recognizer's character dictionary, which
#                          the wheel keeps in the recognition model's
#                          metadata (key "character", one symbol a line)
#
# The wheel's files are cached in ${XDG_CACHE_HOME:-$HOME/.cache}/nereid/
# rapidocr/<version>/; running again downloads nothing and copies only what
# is missing. The models are not committed (.gitignore).
#
# Environment:
#   NEREID_RAPIDOCR_VERSION   wheel version (default: the pinned one)
#   NEREID_MODEL_REPOSITORY   repository to fill (default: model_repository/)
#   PYTHON                    interpreter whose pip downloads the wheel
#                             (default: target/pyenv's, else python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="${NEREID_RAPIDOCR_VERSION:-1.4.4}"
REPO="${NEREID_MODEL_REPOSITORY:-$NEREID_ROOT/model_repository}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/nereid/rapidocr/$VERSION"

# Cache file -> repository file.
declare -A targets=(
	[det.onnx]=ocr_det/1/model.onnx
	[cls.onnx]=ocr_cls/1/model.onnx
	[rec.onnx]=ocr_rec/1/model.onnx
	[keys.txt]=ocr_rec_postprocess/1/keys.txt
)

if [[ ! -e "$cache/keys.txt" ]]; then
	pip_python
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	echo "downloading rapidocr-onnxruntime==$VERSION from PyPI" >&2
	"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		-d "$tmp" "rapidocr-onnxruntime==$VERSION" >&2 ||
		die "pip download rapidocr-onnxruntime==$VERSION failed"
	"$PYTHON" - "$tmp"/*.whl "$tmp/out" <<'EOF' || die "extracting the models from the rapidocr wheel failed"
import os, sys, zipfile

wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
wanted = {
    "ch_PP-OCRv4_det_infer.onnx": "det.onnx",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "cls.onnx",
    "ch_PP-OCRv4_rec_infer.onnx": "rec.onnx",
}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("rapidocr_onnxruntime/models/") and base in wanted:
            with z.open(name) as src, open(os.path.join(out, wanted.pop(base)), "wb") as dst:
                dst.write(src.read())
if wanted:
    sys.exit(f"the wheel lacks {sorted(wanted)}")


def fields(buf):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, buf[i : i + 8]
            i += 8
        elif wire == 2:
            n = varint()
            yield number, wire, buf[i : i + n]
            i += n
        elif wire == 5:
            yield number, wire, buf[i : i + 4]
            i += 4
        else:
            sys.exit(f"unexpected protobuf wire type {wire}")


# ModelProto.metadata_props (field 14) holds StringStringEntryProto
# {key = 1, value = 2}.
with open(os.path.join(out, "rec.onnx"), "rb") as f:
    model = f.read()
characters = None
for number, wire, value in fields(model):
    if number == 14 and wire == 2:
        entry = {n: v for n, w, v in fields(value) if w == 2}
        if entry.get(1) == b"character":
            characters = entry.get(2, b"").decode("utf-8")
if characters is None:
    sys.exit("the recognition model has no 'character' metadata")
with open(os.path.join(out, "keys.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(characters.splitlines()) + "\n")
EOF
	mkdir -p "$(dirname "$cache")"
	# One rename publishes the whole set, so an interrupted run leaves
	# nothing half-written behind.
	if ! mv -T "$tmp/out" "$cache" 2>/dev/null; then
		[[ -e "$cache/keys.txt" ]] || die "could not move the models into $cache"
	fi
fi

for file in "${!targets[@]}"; do
	dest="$REPO/${targets[$file]}"
	if ! cmp -s "$cache/$file" "$dest"; then
		mkdir -p "$(dirname "$dest")"
		cp "$cache/$file" "$dest.tmp.$$"
		mv "$dest.tmp.$$" "$dest"
		echo "installed $dest" >&2
	fi
done
