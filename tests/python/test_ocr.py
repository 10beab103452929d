"""The `ocr` ensemble against rapidocr itself.

Text images are rendered with Pillow and DejaVu Sans (words, numbers,
several lines, a slanted line, an upside-down line, a JPEG), read by the
`rapidocr-onnxruntime` package (the reference: the same PP-OCR networks
with rapidocr's Python pre- and post-processing) and by nereid's `ocr`
ensemble over HTTP and gRPC. The aims: at least 95% of the reference's
lines come back from nereid with the same text and a box overlapping the
reference's with IoU >= 0.8. The per-line comparison is printed (run
pytest with -s to see it).

The OCR models come from scripts/fetch-ocr-models.sh and ONNX Runtime from
scripts/fetch-onnxruntime.sh; scripts/test.sh runs both before the suites.
"""

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import Polygon
from tritonclient.utils import InferenceServerException

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

# (lines, font size, rotation in degrees, format)
SAMPLES = {
    "words": (["Hello World"], 32, 0, "PNG"),
    "numbers": (["3.14159 2718 42", "1024 x 768"], 36, 0, "PNG"),
    "lines": (
        [
            "The quick brown fox",
            "jumps over the lazy dog",
            "Invoice 2024-11-22 total 318.50",
            "Order number 55321",
        ],
        30,
        0,
        "PNG",
    ),
    "slanted": (["rotated line of text"], 32, 7, "PNG"),
    "upside_down": (["upside down text"], 32, 180, "PNG"),
    "jpeg": (["Compressed image 2026", "second line here"], 34, 0, "JPEG"),
}


def render(lines, size, angle, fmt) -> bytes:
    font = ImageFont.truetype(FONT, size)
    pad, step = 24, int(size * 1.6)
    width = max(font.getbbox(line)[2] for line in lines) + 2 * pad
    height = len(lines) * step + 2 * pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * step), line, fill="black", font=font)
    if angle:
        img = img.rotate(angle, expand=True, fillcolor="white", resample=Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, fmt, quality=90) if fmt == "JPEG" else img.save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def images():
    return {name: render(*spec) for name, spec in SAMPLES.items()}


@pytest.fixture(scope="module")
def reference(images):
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    out = {}
    for name, data in images.items():
        result, _ = engine(data)
        out[name] = [(np.array(box, dtype=np.float32), text) for box, text, _ in result or []]
    return out


def ocr_http(url, data):
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=True)
    res = client.infer("ocr", [inp])
    return res.as_numpy("TEXT"), res.as_numpy("BOXES"), res.as_numpy("SCORES")


def ocr_grpc(url, data):
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=np.object_))
    res = client.infer("ocr", [inp])
    return res.as_numpy("TEXT"), res.as_numpy("BOXES"), res.as_numpy("SCORES")


def iou(a, b) -> float:
    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union else 0.0


def compare(reference, ocr):
    """Per reference line: nereid's best-overlapping line, its text and IoU.
    Returns (lines matched with the same text and IoU >= 0.8, all lines)."""
    good, total = 0, 0
    rows = []
    for name, data in ocr.items():
        texts, boxes, scores = data
        texts = [t.decode("utf-8") for t in texts]
        assert boxes.shape == (len(texts), 4, 2) and scores.shape == (len(texts),)
        for ref_box, ref_text in reference[name]:
            total += 1
            overlaps = [iou(ref_box, b) for b in boxes]
            best = int(np.argmax(overlaps)) if overlaps else None
            got = texts[best] if best is not None else ""
            overlap = overlaps[best] if best is not None else 0.0
            ok = got == ref_text and overlap >= 0.8
            good += ok
            rows.append(f"{'ok ' if ok else 'BAD'} {name:12} {ref_text!r:36} {got!r:36} IoU {overlap:.3f}")
        extra = len(texts) - len(reference[name])
        if extra:
            rows.append(f"    {name:12} nereid found {len(texts)} lines, rapidocr {len(reference[name])}")
    print("\n" + "\n".join(rows))
    return good, total


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ocr_matches_rapidocr(protocol, url, grpc_url, images, reference):
    infer = ocr_http if protocol == "http" else ocr_grpc
    target = url if protocol == "http" else grpc_url
    ocr = {name: infer(target, data) for name, data in images.items()}
    good, total = compare(reference, ocr)
    assert total >= 12, f"the reference read only {total} lines"
    assert good / total >= 0.95, f"{good} of {total} lines match rapidocr"


def test_each_step_is_a_model_of_its_own(url, images):
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("IMAGE_BYTES", [1], "BYTES")
    inp.set_data_from_numpy(np.array([images["words"]], dtype=np.object_))
    decoded = client.infer("ocr_decode_image", [inp]).as_numpy("IMAGE")
    expected = np.array(Image.open(io.BytesIO(images["words"])).convert("RGB"))[:, :, ::-1]
    np.testing.assert_array_equal(decoded, expected)

    pre = httpclient.InferInput("IMAGE", list(decoded.shape), "UINT8")
    pre.set_data_from_numpy(decoded)
    res = client.infer("ocr_det_preprocess", [pre])
    det_input = res.as_numpy("DET_INPUT")
    assert det_input.shape[:2] == (1, 3)
    assert det_input.shape[2] % 32 == 0 and det_input.shape[3] % 32 == 0
    assert min(det_input.shape[2:]) == 736


@pytest.mark.parametrize(
    "mode, size, fmt",
    [("RGB", (300, 120), "PNG"), ("L", (5, 3), "JPEG"), ("L", (3000, 40), "PNG"), ("RGBA", (40, 900), "PNG")],
)
def test_an_image_without_text_reads_no_line(url, grpc_url, mode, size, fmt):
    blank = io.BytesIO()
    Image.new(mode, size, "white").save(blank, fmt)
    for infer, target in ((ocr_http, url), (ocr_grpc, grpc_url)):
        texts, boxes, scores = infer(target, blank.getvalue())
        assert texts.shape == (0,) and boxes.shape == (0, 4, 2) and scores.shape == (0,)


def test_bad_images_are_refused_clearly(url):
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"GIF89a not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        client.infer("ocr", [inp])
    assert "neither PNG nor JPEG" in str(err.value)
    truncated = render(["cut short"], 32, 0, "PNG")[:60]
    inp.set_data_from_numpy(np.array([truncated], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        client.infer("ocr", [inp])
    assert "PNG image" in str(err.value)
    hair = io.BytesIO()
    Image.new("RGB", (2000, 1), "white").save(hair, "PNG")
    inp.set_data_from_numpy(np.array([hair.getvalue()], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        client.infer("ocr", [inp])
    assert "aspect ratio is too extreme" in str(err.value)
    assert client.is_model_ready("ocr")
