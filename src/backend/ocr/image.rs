//! Pixel work for the OCR steps: decoding PNG/JPEG into 8-bit BGR (the
//! channel order the PP-OCR models were trained on), bilinear resizing,
//! perspective warps with bicubic sampling, rotations and padding.
//!
//! Sampling follows OpenCV's conventions (half-pixel centres, the cubic
//! kernel with a = -0.75, fractional positions quantized to 1/32 of a
//! pixel, replicated borders) because rapidocr, the reference these steps
//! are measured against, resizes and warps with OpenCV. Calls nothing
//! outside this module but the two decoder crates.

use std::io::Cursor;

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::core::{Error, Result};

/// An 8-bit, 3-channel (BGR) image stored row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// A borrowed BGR image (for example a tensor's bytes).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: &'a [u8],
}

impl Image {
    /// A borrowed view of the whole image.
    pub fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            data: &self.data,
        }
    }
}

impl View<'_> {
    fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let at = (y * self.width + x) * 3;
        &self.data[at..at + 3]
    }
}

/// The largest image (in pixels) a client may send: 64 megapixels, well
/// above any document scan, so a small compressed bomb cannot make the
/// server allocate gigabytes.
const MAX_PIXELS: u64 = 64 << 20;

fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 || (width as u64) * (height as u64) > MAX_PIXELS {
        return Err(Error::invalid_arg(format!(
            "image of {width}x{height} pixels: expected between 1 and {MAX_PIXELS} pixels"
        )));
    }
    Ok(())
}

/// Decodes PNG or JPEG bytes into BGR. Gray images are replicated into
/// three channels; an alpha channel is applied as rapidocr does (pixels
/// where alpha is zero become black, and the image is inverted unless it
/// is all black, in which case the transparent part turns white).
pub fn decode(bytes: &[u8]) -> Result<Image> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)
    } else {
        Err(Error::invalid_arg(format!(
            "image of {} bytes is neither PNG nor JPEG (first bytes {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(4)]
        )))
    }
}

fn decode_png(bytes: &[u8]) -> Result<Image> {
    let bad = |e: png::DecodingError| Error::invalid_arg(format!("PNG image: {e}"));
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_size(width, height)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::invalid_arg("PNG image: too large to decode"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let channels = frame.color_type.samples();
    let mut data = Vec::with_capacity(width * height * 3);
    for row in buf.chunks_exact(frame.line_size).take(height) {
        for px in row[..width * channels].chunks_exact(channels) {
            match px {
                [g] | [g, _] => data.extend_from_slice(&[*g, *g, *g]),
                [r, g, b] | [r, g, b, _] => data.extend_from_slice(&[*b, *g, *r]),
                _ => unreachable!("PNG pixels have 1 to 4 samples"),
            }
        }
    }
    if matches!(channels, 2 | 4) {
        let alpha: Vec<u8> = buf
            .chunks_exact(frame.line_size)
            .take(height)
            .flat_map(|row| row[..width * channels].chunks_exact(channels))
            .map(|px| px[channels - 1])
            .collect();
        apply_alpha(&mut data, &alpha, channels == 2);
    }
    Ok(Image {
        width,
        height,
        data,
    })
}

/// rapidocr's alpha handling: gray+alpha is composed onto white; for
/// RGBA, colour is kept where alpha is non-zero, then the image is
/// inverted, or (when nothing but black remains) the transparent part is
/// made white.
fn apply_alpha(bgr: &mut [u8], alpha: &[u8], gray: bool) {
    for (px, &a) in bgr.chunks_exact_mut(3).zip(alpha) {
        if a == 0 {
            px.fill(0);
        }
    }
    let all_black = bgr.iter().all(|&v| v == 0);
    for (px, &a) in bgr.chunks_exact_mut(3).zip(alpha) {
        for v in px {
            *v = if gray || all_black {
                v.saturating_add(255 - a)
            } else {
                255 - *v
            };
        }
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<Image> {
    // Every JPEG colorspace (gray included) maps to RGB; not all map to BGR.
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let bad = |e: zune_jpeg::errors::DecodeErrors| Error::invalid_arg(format!("JPEG image: {e}"));
    decoder.decode_headers().map_err(bad)?;
    let info = decoder
        .info()
        .ok_or_else(|| Error::invalid_arg("JPEG image: no frame header"))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    check_size(width, height)?;
    let mut data = decoder.decode().map_err(bad)?;
    if data.len() != width * height * 3 {
        return Err(Error::invalid_arg(format!(
            "JPEG image: decoded {} bytes for {width}x{height} RGB",
            data.len()
        )));
    }
    for px in data.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    Ok(Image {
        width,
        height,
        data,
    })
}

/// Fixed-point scale of OpenCV's bilinear weights (11 bits).
const LINEAR_ONE: i32 = 2048;

/// For each destination coordinate, the source index and the weight of
/// that index (the next one gets `LINEAR_ONE - weight`), OpenCV style.
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let mut s = f.floor();
            let mut frac = f - s;
            if s < 0.0 {
                s = 0.0;
                frac = 0.0;
            }
            let mut s = s as usize;
            if s + 1 >= src {
                s = src - 1;
                frac = 0.0;
            }
            let w = ((1.0 - frac) * f64::from(LINEAR_ONE)).round() as i32;
            (s, w)
        })
        .collect()
}

/// Bilinear resize to `width` x `height` (OpenCV's INTER_LINEAR).
pub fn resize(src: View<'_>, width: usize, height: usize) -> Image {
    let xs = linear_taps(src.width, width);
    let ys = linear_taps(src.height, height);
    let mut data = Vec::with_capacity(width * height * 3);
    let last_x = src.width - 1;
    let last_y = src.height - 1;
    for &(sy, wy) in &ys {
        let row0 = &src.data[sy * src.width * 3..(sy + 1) * src.width * 3];
        let sy1 = (sy + 1).min(last_y);
        let row1 = &src.data[sy1 * src.width * 3..(sy1 + 1) * src.width * 3];
        for &(sx, wx) in &xs {
            let sx1 = (sx + 1).min(last_x);
            for c in 0..3 {
                let top = wx * i32::from(row0[sx * 3 + c])
                    + (LINEAR_ONE - wx) * i32::from(row0[sx1 * 3 + c]);
                let bottom = wx * i32::from(row1[sx * 3 + c])
                    + (LINEAR_ONE - wx) * i32::from(row1[sx1 * 3 + c]);
                let v = (i64::from(wy) * i64::from(top)
                    + i64::from(LINEAR_ONE - wy) * i64::from(bottom)
                    + (1 << 21))
                    >> 22;
                data.push(v.clamp(0, 255) as u8);
            }
        }
    }
    Image {
        width,
        height,
        data,
    }
}

/// Solves the 3x3 homography (h33 = 1) that maps each `from[i]` to `to[i]`.
pub fn perspective_transform(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Result<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let [x, y] = from[i];
        let [u, v] = to[i];
        a[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting on the augmented matrix.
    for col in 0..8 {
        let pivot = (col..8)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .expect("rows remain");
        if a[pivot][col].abs() < 1e-12 {
            return Err(Error::invalid_arg(format!(
                "box {from:?} is degenerate: no perspective transform maps it to a rectangle"
            )));
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *v -= factor * p;
                }
            }
        }
    }
    let mut h = [1f64; 9];
    for (i, row) in a.iter().enumerate() {
        h[i] = row[8] / row[i];
    }
    Ok(h)
}

/// OpenCV's cubic convolution weights (a = -0.75) for fraction `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// Fractional positions are quantized to this many steps per pixel, as
/// OpenCV's remapping tables do.
const SUBPIXEL: f64 = 32.0;

/// Warps `src` into a `width` x `height` image: destination pixel (x, y)
/// samples the source at `h * (x, y, 1)` (bicubic, replicated borders).
pub fn warp_perspective(src: View<'_>, h: &[f64; 9], width: usize, height: usize) -> Image {
    let mut data = Vec::with_capacity(width * height * 3);
    let clamp_x = |x: i64| x.clamp(0, src.width as i64 - 1) as usize;
    let clamp_y = |y: i64| y.clamp(0, src.height as i64 - 1) as usize;
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f64, y as f64);
            let w = h[6] * xf + h[7] * yf + h[8];
            let w = if w == 0.0 { 0.0 } else { 1.0 / w };
            let sx = ((h[0] * xf + h[1] * yf + h[2]) * w * SUBPIXEL).round();
            let sy = ((h[3] * xf + h[4] * yf + h[5]) * w * SUBPIXEL).round();
            let (ix, iy) = ((sx / SUBPIXEL).floor(), (sy / SUBPIXEL).floor());
            let wx = cubic_weights(sx / SUBPIXEL - ix);
            let wy = cubic_weights(sy / SUBPIXEL - iy);
            let (ix, iy) = (ix as i64, iy as i64);
            let mut acc = [0f64; 3];
            for (j, wyj) in wy.iter().enumerate() {
                let py = clamp_y(iy - 1 + j as i64);
                for (i, wxi) in wx.iter().enumerate() {
                    let p = src.pixel(clamp_x(ix - 1 + i as i64), py);
                    for c in 0..3 {
                        acc[c] += wyj * wxi * f64::from(p[c]);
                    }
                }
            }
            data.extend(acc.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
    }
    Image {
        width,
        height,
        data,
    }
}

/// Rotates 90 degrees counter-clockwise (numpy's `rot90`).
pub fn rotate_ccw(src: View<'_>) -> Image {
    let (w, h) = (src.height, src.width);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(src.pixel(src.width - 1 - y, x));
        }
    }
    Image {
        width: w,
        height: h,
        data,
    }
}

/// Rotates 180 degrees.
pub fn rotate_180(src: View<'_>) -> Image {
    let mut data = Vec::with_capacity(src.data.len());
    for px in src.data.chunks_exact(3).rev() {
        data.extend_from_slice(px);
    }
    Image {
        width: src.width,
        height: src.height,
        data,
    }
}

/// Adds `rows` black rows above and below.
pub fn pad_vertical(src: View<'_>, rows: usize) -> Image {
    let row_bytes = src.width * 3;
    let mut data = vec![0u8; row_bytes * rows];
    data.extend_from_slice(src.data);
    data.resize(data.len() + row_bytes * rows, 0);
    Image {
        width: src.width,
        height: src.height + 2 * rows,
        data,
    }
}

/// Writes `img` as CHW floats `(v / 255 - 0.5) / 0.5` (little-endian
/// bytes, the tensor's wire form, so no second pass converts them) into
/// `out`, a `3 x out_height x out_width` plane set, leaving columns beyond
/// the image's width as they are (zero padding when `out` starts zeroed).
pub fn normalize_chw(img: View<'_>, out: &mut [u8], out_width: usize) {
    let levels: [[u8; 4]; 256] =
        std::array::from_fn(|v| ((v as f32 / 255.0 - 0.5) / 0.5).to_le_bytes());
    let plane = img.height * out_width * 4;
    for (y, row) in img.data.chunks_exact(img.width * 3).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let at = (y * out_width + x) * 4;
            for (c, &v) in px.iter().enumerate() {
                out[c * plane + at..c * plane + at + 4].copy_from_slice(&levels[usize::from(v)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> Image {
        let data = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [x as u8 * 10, y as u8 * 10, 7]))
            .collect();
        Image {
            width,
            height,
            data,
        }
    }

    #[test]
    fn resize_to_same_size_is_identity_and_halving_averages_pairs() {
        let img = gradient(8, 4);
        assert_eq!(resize(img.view(), 8, 4), img);
        let half = resize(img.view(), 4, 2);
        // Half-pixel centres: destination x=0 samples source x=0.5.
        assert_eq!(half.view().pixel(0, 0), &[5, 5, 7]);
        assert_eq!(half.view().pixel(3, 1), &[65, 25, 7]);
    }

    #[test]
    fn identity_warp_copies_and_a_shift_replicates_the_border() {
        let img = gradient(6, 5);
        let h = perspective_transform(
            &[[0.0, 0.0], [5.0, 0.0], [5.0, 4.0], [0.0, 4.0]],
            &[[0.0, 0.0], [5.0, 0.0], [5.0, 4.0], [0.0, 4.0]],
        )
        .unwrap();
        assert_eq!(warp_perspective(img.view(), &h, 6, 5), img);
        let shift = [1.0, 0.0, -2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let out = warp_perspective(img.view(), &shift, 6, 5);
        assert_eq!(out.view().pixel(0, 0), img.view().pixel(0, 0));
        assert_eq!(out.view().pixel(4, 2), img.view().pixel(2, 2));
    }

    #[test]
    fn a_collapsed_box_has_no_transform() {
        let p = [[1.0, 1.0]; 4];
        assert!(perspective_transform(&p, &p).is_err());
    }

    #[test]
    fn rotations_move_corners() {
        let img = gradient(3, 2);
        let ccw = rotate_ccw(img.view());
        assert_eq!((ccw.width, ccw.height), (2, 3));
        // The top-right corner comes to the top-left.
        assert_eq!(ccw.view().pixel(0, 0), img.view().pixel(2, 0));
        assert_eq!(ccw.view().pixel(1, 2), img.view().pixel(0, 1));
        let turned = rotate_180(img.view());
        assert_eq!(turned.view().pixel(0, 0), img.view().pixel(2, 1));
        assert_eq!(rotate_180(turned.view()), img);
    }

    #[test]
    fn png_gray_and_rgb_decode_to_bgr() {
        let encode = |color: png::ColorType, pixels: &[u8]| {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, 2, 1);
            enc.set_color(color);
            enc.write_header()
                .unwrap()
                .write_image_data(pixels)
                .unwrap();
            out
        };
        let rgb = decode(&encode(png::ColorType::Rgb, &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(rgb.data, [3, 2, 1, 6, 5, 4]);
        let gray = decode(&encode(png::ColorType::Grayscale, &[9, 200])).unwrap();
        assert_eq!(gray.data, [9, 9, 9, 200, 200, 200]);
        let ga = decode(&encode(png::ColorType::GrayscaleAlpha, &[0, 0, 10, 255])).unwrap();
        assert_eq!(ga.data, [255, 255, 255, 10, 10, 10]);
    }

    #[test]
    fn other_bytes_are_refused_with_what_arrived() {
        let err = decode(b"GIF89a....").unwrap_err();
        assert!(err.message().contains("neither PNG nor JPEG"), "{err:?}");
        let err = decode(b"\x89PNG\r\n\x1a\ntruncated").unwrap_err();
        assert!(err.message().starts_with("PNG image"), "{err:?}");
        assert!(decode(&[0xFF, 0xD8, 0xFF]).is_err());
    }
}
