//! Text recognition around the direction classifier and the CRNN/SVTR
//! recognizer: cutting each detected box out of the image, preparing the
//! crops for both networks, and CTC decoding the recognizer's output.
//!
//! Sizes and rules are rapidocr's: crops straightened by a perspective
//! warp and turned upright when 1.5 times taller than wide, classifier
//! input 3x48x192, recognizer input 48 high and as wide as the widest
//! crop's aspect ratio asks (at least 320), zero padding on the right,
//! greedy CTC with repeated symbols merged and blanks dropped.

use super::image::{self, Image, View};
use crate::core::{Error, Result};

/// Input height of both the classifier and the recognizer.
pub const LINE_HEIGHT: usize = 48;
/// Classifier input width.
pub const CLS_WIDTH: usize = 192;
/// The recognizer's narrowest input width.
const REC_MIN_WIDTH: usize = 320;
/// The recognizer's widest input: 256 times the line height, far beyond a
/// real line of text, so a crop of one pixel's height cannot make the
/// input tensor gigabytes wide; wider crops are squeezed to it.
const REC_MAX_WIDTH: usize = 256 * LINE_HEIGHT;

fn distance(a: [f32; 2], b: [f32; 2]) -> f64 {
    (f64::from(a[0] - b[0]).powi(2) + f64::from(a[1] - b[1]).powi(2)).sqrt()
}

/// Cuts box `quad` (corners clockwise from top-left, inside the image)
/// out of `src` as an upright rectangle, turned a quarter counter-clockwise
/// when it stands 1.5 times taller than wide.
pub fn crop(src: View<'_>, quad: &[[f32; 2]; 4]) -> Result<Image> {
    let inside = |p: &[f32; 2]| {
        (0.0..=src.width as f32).contains(&p[0]) && (0.0..=src.height as f32).contains(&p[1])
    };
    if !quad.iter().all(inside) {
        return Err(Error::invalid_arg(format!(
            "box {quad:?} reaches outside the {}x{} image",
            src.width, src.height
        )));
    }
    let width = distance(quad[0], quad[1]).max(distance(quad[2], quad[3])) as usize;
    let height = distance(quad[0], quad[3]).max(distance(quad[1], quad[2])) as usize;
    if width == 0 || height == 0 {
        return Err(Error::invalid_arg(format!(
            "box {quad:?} is {width}x{height} pixels: nothing to crop"
        )));
    }
    let (w, h) = (width as f64, height as f64);
    let rect = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]];
    let corners = quad.map(|p| [f64::from(p[0]), f64::from(p[1])]);
    let to_source = image::perspective_transform(&rect, &corners)?;
    let out = image::warp_perspective(src, &to_source, width, height);
    Ok(if height as f64 / width as f64 >= 1.5 {
        image::rotate_ccw(out.view())
    } else {
        out
    })
}

/// Crops packed into one tensor: `[n, max_h, max_w, 3]` bytes (each crop
/// in the top-left corner of its slot, zeros elsewhere) and each crop's
/// `[height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// The slots' bytes.
    pub data: Vec<u8>,
    /// `[n, max_h, max_w, 3]`.
    pub shape: [usize; 4],
    /// Each crop's height and width.
    pub sizes: Vec<[usize; 2]>,
}

/// Packs crops into slots of the largest crop's size.
pub fn pack(crops: &[Image]) -> Packed {
    let max_h = crops.iter().map(|c| c.height).max().unwrap_or(0);
    let max_w = crops.iter().map(|c| c.width).max().unwrap_or(0);
    let slot = max_h * max_w * 3;
    let mut data = vec![0u8; crops.len() * slot];
    for (i, c) in crops.iter().enumerate() {
        for y in 0..c.height {
            let at = i * slot + y * max_w * 3;
            data[at..at + c.width * 3]
                .copy_from_slice(&c.data[y * c.width * 3..(y + 1) * c.width * 3]);
        }
    }
    Packed {
        data,
        shape: [crops.len(), max_h, max_w, 3],
        sizes: crops.iter().map(|c| [c.height, c.width]).collect(),
    }
}

/// The crops of a packed tensor (copied out of their slots).
pub fn unpack(data: &[u8], shape: [usize; 4], sizes: &[[usize; 2]]) -> Result<Vec<Image>> {
    let [n, max_h, max_w, _] = shape;
    if sizes.len() != n {
        return Err(Error::invalid_arg(format!(
            "{n} crops but {} crop sizes",
            sizes.len()
        )));
    }
    let slot = max_h * max_w * 3;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &[h, w])| {
            if h == 0 || w == 0 || h > max_h || w > max_w {
                return Err(Error::invalid_arg(format!(
                    "crop {i} is {h}x{w} pixels: expected between 1x1 and {max_h}x{max_w} (its slot)"
                )));
            }
            let mut out = Vec::with_capacity(h * w * 3);
            for y in 0..h {
                let at = i * slot + y * max_w * 3;
                out.extend_from_slice(&data[at..at + w * 3]);
            }
            Ok(Image {
                width: w,
                height: h,
                data: out,
            })
        })
        .collect()
}

/// Resizes a crop to `LINE_HEIGHT` rows and its aspect ratio's width (at
/// most `max_width`), normalized, into the `3 x LINE_HEIGHT x max_width`
/// planes `out` (floats as little-endian bytes).
fn line_into(crop: View<'_>, out: &mut [u8], max_width: usize) {
    let ratio = crop.width as f64 / crop.height as f64;
    let width = ((LINE_HEIGHT as f64 * ratio).ceil() as usize).clamp(1, max_width);
    let resized = image::resize(crop, width, LINE_HEIGHT);
    image::normalize_chw(resized.view(), out, max_width);
}

/// The direction classifier's input: `[n, 3, 48, 192]` floats as
/// little-endian bytes.
pub fn cls_input(crops: &[Image]) -> Vec<u8> {
    let per = 3 * LINE_HEIGHT * CLS_WIDTH * 4;
    let mut out = vec![0u8; crops.len() * per];
    for (c, slot) in crops.iter().zip(out.chunks_exact_mut(per)) {
        line_into(c.view(), slot, CLS_WIDTH);
    }
    out
}

/// Turns the crops the classifier finds upside down (class 1, "180",
/// with a probability above `thresh`) the right way up. `probs` is the
/// classifier's `[n, 2]` output.
pub fn apply_direction(crops: &mut [Image], probs: &[f32], thresh: f32) {
    for (c, p) in crops.iter_mut().zip(probs.chunks_exact(2)) {
        if p[1] > p[0] && p[1] > thresh {
            *c = image::rotate_180(c.view());
        }
    }
}

/// The recognizer's input, `[n, 3, 48, width]` floats as little-endian
/// bytes, and its width: wide enough for the widest crop's aspect ratio,
/// at least 320 and at most `REC_MAX_WIDTH`.
pub fn rec_input(crops: &[Image]) -> (Vec<u8>, usize) {
    let max_ratio = crops
        .iter()
        .map(|c| c.width as f64 / c.height as f64)
        .fold(REC_MIN_WIDTH as f64 / LINE_HEIGHT as f64, f64::max);
    let width = ((LINE_HEIGHT as f64 * max_ratio) as usize).min(REC_MAX_WIDTH);
    let per = 3 * LINE_HEIGHT * width * 4;
    let mut out = vec![0u8; crops.len() * per];
    for (c, slot) in crops.iter().zip(out.chunks_exact_mut(per)) {
        line_into(c.view(), slot, width);
    }
    (out, width)
}

/// The recognizer's alphabet: class 0 is the CTC blank, classes 1..=n the
/// dictionary's lines, class n+1 a space.
#[derive(Debug, Clone)]
pub struct Alphabet {
    symbols: Vec<String>,
}

impl Alphabet {
    /// From the dictionary text, one symbol per line.
    pub fn from_dictionary(text: &str) -> Alphabet {
        let mut symbols = vec![String::new()];
        symbols.extend(text.lines().map(str::to_string));
        symbols.push(" ".to_string());
        Alphabet { symbols }
    }

    /// Number of classes, blank and space included.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether only the blank and the space are known.
    pub fn is_empty(&self) -> bool {
        self.symbols.len() <= 2
    }

    /// Greedy CTC decoding of one line's `[steps, classes]` probabilities:
    /// the best class per step, repeats merged, blanks dropped; the score
    /// is the mean probability of the symbols kept (0 when none is).
    pub fn decode(&self, probs: &[f32]) -> (String, f32) {
        let classes = self.symbols.len();
        let mut text = String::new();
        let (mut sum, mut kept) = (0f64, 0usize);
        let mut previous = None;
        for step in probs.chunks_exact(classes) {
            let (best, p) =
                step.iter().enumerate().fold(
                    (0, f32::MIN),
                    |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                );
            if best != 0 && previous != Some(best) {
                text.push_str(&self.symbols[best]);
                sum += f64::from(p);
                kept += 1;
            }
            previous = Some(best);
        }
        let score = if kept == 0 {
            0.0
        } else {
            (sum / kept as f64) as f32
        };
        (text, score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(width: usize, height: usize, v: u8) -> Image {
        Image {
            width,
            height,
            data: vec![v; width * height * 3],
        }
    }

    #[test]
    fn crop_straightens_a_box_and_stands_tall_ones_up() {
        let mut src = solid(40, 30, 0);
        for y in 10..20 {
            for x in 5..35 {
                let at = (y * 40 + x) * 3;
                src.data[at..at + 3].copy_from_slice(&[1, 2, 3]);
            }
        }
        let c = crop(
            src.view(),
            &[[5.0, 10.0], [35.0, 10.0], [35.0, 20.0], [5.0, 20.0]],
        )
        .unwrap();
        assert_eq!((c.width, c.height), (30, 10));
        assert!(c.data.chunks_exact(3).all(|p| p == [1, 2, 3]));
        let tall = crop(
            src.view(),
            &[[5.0, 0.0], [10.0, 0.0], [10.0, 20.0], [5.0, 20.0]],
        )
        .unwrap();
        assert_eq!((tall.width, tall.height), (20, 5));
        let err = crop(src.view(), &[[5.0, 5.0]; 4]).unwrap_err();
        assert!(err.message().contains("nothing to crop"), "{err:?}");
        let far = [[0.0, 0.0], [1e9, 0.0], [1e9, 5.0], [0.0, f32::NAN]];
        let err = crop(src.view(), &far).unwrap_err();
        assert!(err.message().contains("outside the 40x30 image"), "{err:?}");
    }

    #[test]
    fn pack_and_unpack_round_trip() {
        let crops = vec![solid(3, 2, 7), solid(1, 4, 9)];
        let packed = pack(&crops);
        assert_eq!(packed.shape, [2, 4, 3, 3]);
        assert_eq!(packed.sizes, vec![[2, 3], [4, 1]]);
        assert_eq!(
            unpack(&packed.data, packed.shape, &packed.sizes).unwrap(),
            crops
        );
        let err = unpack(&packed.data, packed.shape, &[[2, 3], [5, 1]]).unwrap_err();
        assert!(err.message().contains("crop 1 is 5x1"), "{err:?}");
    }

    #[test]
    fn line_inputs_keep_the_aspect_ratio_and_pad_with_zeros() {
        let crops = vec![solid(48, 24, 255), solid(960, 48, 0)];
        let at = |bytes: &[u8], i: usize| {
            f32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap())
        };
        let cls = cls_input(&crops);
        let plane = LINE_HEIGHT * CLS_WIDTH;
        // 48x24 becomes 96x48: ones up to column 96, padding after.
        assert_eq!(at(&cls, 95), 1.0);
        assert_eq!(at(&cls, 96), 0.0);
        assert_eq!(at(&cls, 3 * plane + CLS_WIDTH - 1), -1.0);
        let (rec, width) = rec_input(&crops);
        assert_eq!(width, 960);
        let (_, squeezed) = rec_input(&[solid(100_000, 1, 0)]);
        assert_eq!(squeezed, REC_MAX_WIDTH);
        assert_eq!(rec.len(), 2 * 3 * LINE_HEIGHT * 960 * 4);
        assert_eq!(at(&rec, 95), 1.0);
        assert_eq!(at(&rec, 96), 0.0);
    }

    #[test]
    fn direction_turns_only_confident_upside_down_crops() {
        let mut crops = vec![solid(2, 1, 0), solid(2, 1, 0), solid(2, 1, 0)];
        for c in &mut crops {
            c.data[0] = 5;
        }
        apply_direction(&mut crops, &[0.95, 0.05, 0.05, 0.95, 0.2, 0.8], 0.9);
        assert_eq!(crops[0].data[0], 5);
        assert_eq!(crops[1].data[3], 5);
        assert_eq!(crops[2].data[0], 5);
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let alphabet = Alphabet::from_dictionary("a\nb");
        assert_eq!(alphabet.len(), 4);
        let step = |class: usize, p: f32| {
            let mut v = vec![(1.0 - p) / 3.0; 4];
            v[class] = p;
            v
        };
        let probs: Vec<f32> = [
            step(1, 0.9),
            step(1, 0.8),
            step(0, 0.9),
            step(1, 0.7),
            step(3, 0.6),
            step(2, 0.5),
        ]
        .concat();
        let (text, score) = alphabet.decode(&probs);
        assert_eq!(text, "aa b");
        assert!((score - 0.675).abs() < 1e-6, "{score}");
        assert_eq!(alphabet.decode(&step(0, 0.9)), (String::new(), 0.0));
    }
}
