"""`preprocess_cuda` (IMAGE UINT8 [H, W, 3] -> OUTPUT FP32 [3, 224, 224]:
bilinear resize with half-pixel centers, x / 255, ImageNet mean/std,
HWC -> CHW) against a float64 NumPy reference written here, which is
itself checked against PyTorch's interpolate where PyTorch is installed.

Tolerance: the error relative to max(|reference|, 1) must stay under
1e-5. The kernel computes sampling coordinates in float32, and one ulp of
a coordinate moves a sample by (ulp x the local pixel gradient), so on
smooth images (at most a few levels per pixel) and on exact grids
(224 -> 224, 448 -> 224, 112 -> 224, whose coordinates float32 holds
exactly) the bound is 1e-5 flat; on random noise, where neighbours differ
by up to 255 levels, it grows by that coordinate term and no more."""

import numpy as np
import pytest

from conftest import wait_model_ready

MODEL = "preprocess_cuda"
OUT = 224
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
REL_TOL = 1e-5


def resize_bilinear(image, out_h, out_w):
    """Bilinear resize of an [H, W, C] float64 image with half-pixel
    centers: output pixel d samples source coordinate (d + 0.5) * in / out
    - 0.5, clamped at 0; neighbours past the last row/column repeat it."""
    h, w = image.shape[:2]

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, ly = axis(h, out_h)
    x0, x1, lx = axis(w, out_w)
    lx = lx[None, :, None]
    ly = ly[:, None, None]
    top = image[y0][:, x0] * (1 - lx) + image[y0][:, x1] * lx
    bottom = image[y1][:, x0] * (1 - lx) + image[y1][:, x1] * lx
    return top * (1 - ly) + bottom * ly


def reference(image):
    """The model's output for a uint8 [H, W, 3] image, in float64."""
    resized = resize_bilinear(image.astype(np.float64), OUT, OUT)
    return ((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def coordinate_slack(image):
    """The extra error float32 sampling coordinates may cause on `image`:
    a few ulps of the largest coordinate times the steepest step between
    neighbours, in output units."""
    h, w = image.shape[:2]
    pixels = image.astype(np.float64)
    step = max(
        np.abs(np.diff(pixels, axis=0)).max(initial=0),
        np.abs(np.diff(pixels, axis=1)).max(initial=0),
    )
    ulp = float(np.spacing(np.float32(max(h, w))))
    return 4 * ulp * step / 255.0 / STD.min()


def random_image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(h, w):
    """Ramps of at most ~4 levels per pixel, one per channel."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 200.0 / max(w, 50) + y * 50.0 / max(h, 50)
    g = 255.0 - r
    b = (x + y) * 100.0 / max(h + w, 100) + 20
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def check(got, image, slack=0.0):
    want = reference(image)
    assert got.shape == want.shape, f"{got.shape} != {want.shape}"
    assert got.dtype == np.float32
    error = np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1.0)
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() < REL_TOL + slack, (
        f"max relative error {error.max():.3g} at {worst} (got {got[worst]}, want {want[worst]}), "
        f"allowed {REL_TOL + slack:.3g}"
    )


def model_shapes(client):
    """(batch prefix, output shape): the config's max_batch_size decides
    whether requests carry a batch dimension."""
    config = client.get_model_config(MODEL)
    config = config.get("config", config) if isinstance(config, dict) else config.config
    mbs = config["max_batch_size"] if isinstance(config, dict) else config.max_batch_size
    prefix = [1] if mbs else []
    return prefix, prefix + [3, OUT, OUT]


def infer_body(client, image):
    prefix, out_shape = model_shapes(client)
    inp = client.input("IMAGE", prefix + list(image.shape), "UINT8", image.reshape(prefix + list(image.shape)))
    result = client.infer(MODEL, [inp], outputs=[client.output("OUTPUT")])
    got = result.as_numpy("OUTPUT")
    assert list(got.shape) == out_shape
    return got.reshape(3, OUT, OUT)


def test_reference_matches_torch():
    torch = pytest.importorskip("torch")
    for h, w in ((480, 640), (37, 53), (224, 224), (1, 1), (500, 3)):
        image = random_image(h, w, h * w)
        tensor = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]
        resized = torch.nn.functional.interpolate(
            tensor, size=(OUT, OUT), mode="bilinear", align_corners=False, antialias=False
        )[0].numpy()
        ours = resize_bilinear(image.astype(np.float64), OUT, OUT).transpose(2, 0, 1)
        assert np.abs(resized - ours).max() < 1e-9, (h, w)


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (112, 112)])
def test_exact_grids(client, size):
    wait_model_ready(client, MODEL)
    image = random_image(*size, seed=size[0])
    check(infer_body(client, image), image)


@pytest.mark.parametrize("size", [(480, 640), (224, 224), (37, 53), (1080, 1920), (1, 1), (300, 7)])
def test_smooth_images(client, size):
    wait_model_ready(client, MODEL)
    image = smooth_image(*size)
    check(infer_body(client, image), image, coordinate_slack(image))


@pytest.mark.parametrize("size", [(480, 640), (37, 53), (720, 1280)])
def test_random_images(client, size):
    wait_model_ready(client, MODEL)
    image = random_image(*size, seed=size[0] * size[1])
    check(infer_body(client, image), image, coordinate_slack(image))


def test_cuda_shm_in_and_out(client, regions):
    """The image in CUDA shm and the tensor written to CUDA shm: the whole
    pipeline stays on the device."""
    wait_model_ready(client, MODEL)
    prefix, out_shape = model_shapes(client)
    image = random_image(480, 640, seed=7)
    out_bytes = 3 * OUT * OUT * 4
    src = regions.cuda("image_in", image.nbytes)
    dst = regions.cuda("tensor_out", out_bytes)
    src.set(image)
    src.register(client)
    dst.register(client)
    inp = client.input("IMAGE", prefix + list(image.shape), "UINT8")
    inp.set_shared_memory(src.name, image.nbytes)
    out = client.output("OUTPUT")
    out.set_shared_memory(dst.name, out_bytes)
    result = client.infer(MODEL, [inp], outputs=[out])
    assert not client.in_body(result, "OUTPUT")
    check(dst.get(np.float32, [3, OUT, OUT]), image, coordinate_slack(image))


def test_bad_images_refused(client):
    """A 4-channel image and an empty one are refused; the model stays up."""
    wait_model_ready(client, MODEL)
    prefix, _ = model_shapes(client)
    rgba = np.zeros(prefix + [8, 8, 4], dtype=np.uint8)
    client.expect_error(client.infer, MODEL, [client.input("IMAGE", rgba.shape, "UINT8", rgba)], contains="IMAGE")
    empty = np.zeros(prefix + [0, 8, 3], dtype=np.uint8)
    client.expect_error(client.infer, MODEL, [client.input("IMAGE", empty.shape, "UINT8", empty)])
    image = smooth_image(64, 64)
    check(infer_body(client, image), image, coordinate_slack(image))
