//! CPU reference implementations of the kernels in `kernels/`: the same
//! arithmetic, in the same order of single-precision operations, so a GPU
//! result can be checked against them element by element. Pure host code,
//! no CUDA.

use super::{Image, Preprocess};

/// `(in0 + in1, in0 - in1)` element-wise, wrapping on overflow, as
/// `add_sub_i32` computes.
pub fn add_sub_i32(in0: &[i32], in1: &[i32]) -> (Vec<i32>, Vec<i32>) {
    in0.iter()
        .zip(in1)
        .map(|(&a, &b)| (a.wrapping_add(b), a.wrapping_sub(b)))
        .unzip()
}

/// `(in0 + in1, in0 - in1)` element-wise, as `add_sub_f32` computes.
pub fn add_sub_f32(in0: &[f32], in1: &[f32]) -> (Vec<f32>, Vec<f32>) {
    in0.iter().zip(in1).map(|(&a, &b)| (a + b, a - b)).unzip()
}

/// One axis of the half-pixel bilinear mapping: the two source indices and
/// their weights for output index `o`.
fn taps(o: u32, scale: f32, len: u32) -> (usize, usize, f32, f32) {
    let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
    // Truncation is floor here: `s` is not negative.
    let i0 = (s as u32).min(len - 1);
    let i1 = if i0 < len - 1 { i0 + 1 } else { i0 };
    let w1 = s - i0 as f32;
    (i0 as usize, i1 as usize, 1.0 - w1, w1)
}

/// The values `preprocess_f32` writes for a UINT8 HWC `src` of shape
/// `image`: bilinear resize to `params.out_height` x `params.out_width`,
/// `(x * scale - mean[c]) / std[c]`, CHW. The FP16 kernel writes each value
/// rounded to nearest even (`half::f16::from_f32`).
///
/// `src` must hold `image.height * image.width * image.channels` bytes and
/// `params.validate(image)` must pass; this panics otherwise.
pub fn preprocess(src: &[u8], image: &Image, params: &Preprocess) -> Vec<f32> {
    params
        .validate(image)
        .expect("reference preprocess: invalid parameters");
    let (h, w, c) = (image.height, image.width, image.channels as usize);
    assert_eq!(
        src.len(),
        h as usize * w as usize * c,
        "reference preprocess: source size"
    );
    let args = params.kernel_args(image);
    let (oh, ow) = (params.out_height as usize, params.out_width as usize);
    let plane = oh * ow;
    let mut out = vec![0.0f32; c * plane];
    for oy in 0..oh {
        let (y0, y1, ly0, ly1) = taps(oy as u32, args.scale_y, h);
        for ox in 0..ow {
            let (x0, x1, lx0, lx1) = taps(ox as u32, args.scale_x, w);
            let at = |y: usize, x: usize, ch: usize| src[(y * w as usize + x) * c + ch] as f32;
            for ch in 0..c {
                let top = lx0 * at(y0, x0, ch) + lx1 * at(y0, x1, ch);
                let bottom = lx0 * at(y1, x0, ch) + lx1 * at(y1, x1, ch);
                let v = ly0 * top + ly1 * bottom;
                out[ch * plane + oy * ow + ox] =
                    (v * params.scale - params.mean[ch]) * args.inv_std[ch];
            }
        }
    }
    out
}
