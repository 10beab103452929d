//! Text detection around the DB (Differentiable Binarization) network:
//! the preprocessing that sizes and normalizes an image for it, and the
//! post-processing that turns its probability map into text boxes.
//!
//! Both follow rapidocr's Python pipeline step by step (its resize rules,
//! thresholds, unclip ratio and box ordering), so boxes match the
//! reference's. The geometry is a compact own implementation rather than a
//! crate: `imageproc` would bring contours and minimum-area rectangles but
//! also `image`, `rayon`, `nalgebra` and their trees (minutes of build on
//! this project's two cores) for three small routines: 8-connected
//! components, a convex hull (monotone chain) and rotating calipers.
//! Hole contours, which OpenCV's contour listing also returns, are not
//! searched: inside a text line they enclose background and fall below
//! the box score threshold.

use super::image::{self, Image, View};
use crate::core::{Error, Result};

/// What detection preprocessing did to the image, so boxes can be mapped
/// back to the client's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Original height over working height (1 when not resized).
    pub ratio_h: f32,
    /// Original width over working width.
    pub ratio_w: f32,
    /// Black rows added above (and below) the working image.
    pub pad_top: f32,
    /// Height of the client's image.
    pub raw_h: f32,
    /// Width of the client's image.
    pub raw_w: f32,
}

impl Transform {
    /// As the six floats the steps exchange.
    pub fn to_array(self) -> [f32; 6] {
        [
            self.ratio_h,
            self.ratio_w,
            self.pad_top,
            0.0,
            self.raw_h,
            self.raw_w,
        ]
    }

    /// From the six floats [`Transform::to_array`] writes.
    pub fn from_array(a: [f32; 6]) -> Transform {
        Transform {
            ratio_h: a[0],
            ratio_w: a[1],
            pad_top: a[2],
            raw_h: a[4],
            raw_w: a[5],
        }
    }

    /// Maps a point of the working image to the client's image, clipped
    /// to it.
    pub fn to_original(self, [x, y]: [f32; 2]) -> [f32; 2] {
        [
            (x * self.ratio_w).clamp(0.0, self.raw_w),
            ((y - self.pad_top) * self.ratio_h).clamp(0.0, self.raw_h),
        ]
    }
}

/// Detection settings (rapidocr's defaults in [`DetParams::default`]).
#[derive(Debug, Clone, Copy)]
pub struct DetParams {
    /// Images whose longer side exceeds this are scaled down first.
    pub max_side_len: usize,
    /// Images whose shorter side is below this are scaled up first.
    pub min_side_len: usize,
    /// Images this short (or wider than `width_height_ratio` times their
    /// height) get black bands above and below.
    pub min_height: usize,
    /// See `min_height`.
    pub width_height_ratio: f64,
    /// The network's input has its shorter side scaled up to this.
    pub limit_side_len: usize,
    /// Probability above which a pixel is text.
    pub thresh: f32,
    /// Mean probability below which a box is dropped.
    pub box_thresh: f32,
    /// At most this many regions are considered.
    pub max_candidates: usize,
    /// How far a box grows: area times this over perimeter.
    pub unclip_ratio: f32,
}

impl Default for DetParams {
    fn default() -> DetParams {
        DetParams {
            max_side_len: 2000,
            min_side_len: 30,
            min_height: 30,
            width_height_ratio: 8.0,
            limit_side_len: 736,
            thresh: 0.3,
            box_thresh: 0.5,
            max_candidates: 1000,
            unclip_ratio: 1.6,
        }
    }
}

/// Python's `round(v / 32) * 32` (ties to even) for a side length.
fn round_to_32(v: f64) -> usize {
    ((v / 32.0).round_ties_even() * 32.0) as usize
}

/// rapidocr's resize of a side pair by `ratio` to multiples of 32.
fn scaled_32(h: usize, w: usize, ratio: f64) -> (usize, usize) {
    (
        round_to_32((h as f64 * ratio).trunc()),
        round_to_32((w as f64 * ratio).trunc()),
    )
}

/// Preprocessed input for the detection network.
#[derive(Debug)]
pub struct DetInput {
    /// `[1, 3, height, width]` normalized floats as little-endian bytes.
    pub tensor: Vec<u8>,
    /// Network input height.
    pub height: usize,
    /// Network input width.
    pub width: usize,
    /// The working image the boxes refer to, when it differs from the
    /// client's (resized or padded).
    pub working: Option<Image>,
    /// How to map working coordinates back.
    pub transform: Transform,
}

/// Sizes, pads and normalizes an image for the detection network as
/// rapidocr does: outer side limits, letterbox for very flat images, then
/// the shorter side scaled up to `limit_side_len`, both sides rounded to
/// multiples of 32, and `(v / 255 - 0.5) / 0.5` per channel in CHW order.
///
/// Fails, before allocating, when an extreme aspect ratio would make an
/// intermediate image larger than `MAX_WORK_PIXELS`.
pub fn preprocess(src: View<'_>, p: &DetParams) -> Result<DetInput> {
    let (raw_h, raw_w) = (src.height, src.width);
    let fits = |h: usize, w: usize| {
        if h.saturating_mul(w) > MAX_WORK_PIXELS {
            return Err(Error::invalid_arg(format!(
                "image of {raw_w}x{raw_h} pixels: detection would work on {w}x{h} pixels, more than {MAX_WORK_PIXELS}; its aspect ratio is too extreme"
            )));
        }
        Ok(())
    };
    let mut transform = Transform {
        ratio_h: 1.0,
        ratio_w: 1.0,
        pad_top: 0.0,
        raw_h: raw_h as f32,
        raw_w: raw_w as f32,
    };
    let mut working: Option<Image> = None;
    let mut rescale = |working: &mut Option<Image>, ratio: f64| {
        let cur = working.as_ref().map_or(src, Image::view);
        let (h, w) = scaled_32(cur.height, cur.width, ratio);
        let (h, w) = (h.max(32), w.max(32));
        fits(h, w)?;
        transform.ratio_h = (cur.height as f64 / h as f64) as f32;
        transform.ratio_w = (cur.width as f64 / w as f64) as f32;
        *working = Some(image::resize(cur, w, h));
        Ok::<(), Error>(())
    };
    if raw_h.max(raw_w) > p.max_side_len {
        rescale(
            &mut working,
            p.max_side_len as f64 / raw_h.max(raw_w) as f64,
        )?;
    }
    let (h, w) = working
        .as_ref()
        .map_or((raw_h, raw_w), |i| (i.height, i.width));
    if h.min(w) < p.min_side_len {
        rescale(&mut working, p.min_side_len as f64 / h.min(w) as f64)?;
    }
    let cur = working.as_ref().map_or(src, Image::view);
    let (h, w) = (cur.height, cur.width);
    if h <= p.min_height || w as f64 / h as f64 > p.width_height_ratio {
        let new_h = ((w as f64 / p.width_height_ratio) as usize).max(p.min_height) * 2;
        let pad = new_h.abs_diff(h) / 2;
        fits(h + 2 * pad, w)?;
        transform.pad_top = pad as f32;
        working = Some(image::pad_vertical(cur, pad));
    }
    let cur = working.as_ref().map_or(src, Image::view);
    let (h, w) = (cur.height, cur.width);
    let ratio = if h.min(w) < p.limit_side_len {
        p.limit_side_len as f64 / h.min(w) as f64
    } else {
        1.0
    };
    let (height, width) = scaled_32(h, w, ratio);
    let (height, width) = (height.max(32), width.max(32));
    fits(height, width)?;
    let resized = image::resize(cur, width, height);
    let mut tensor = vec![0u8; 3 * height * width * 4];
    image::normalize_chw(resized.view(), &mut tensor, width);
    Ok(DetInput {
        tensor,
        height,
        width,
        working,
        transform,
    })
}

/// The most pixels detection preprocessing works on (or feeds the
/// network): 24 megapixels, twice what the side limits let an ordinary
/// image reach (a 2000x100 strip becomes 14720x736), so only pathological
/// aspect ratios (a 2000x1 strip would be letterboxed to 60000x15000) are
/// refused.
const MAX_WORK_PIXELS: usize = 24 << 20;

/// A point with float coordinates.
type Point = [f64; 2];

/// 8-connected regions of `mask` (row-major, `width` wide), each as the
/// list of its pixels' coordinates, in the order their first pixel is met.
fn regions(mask: &[bool], width: usize, height: usize) -> Vec<Vec<(i32, i32)>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as i32, (i / width) as i32);
            pixels.push((x, y));
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as i32 || ny >= height as i32 {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(pixels);
    }
    out
}

/// The leftmost and rightmost pixel of each row of a region: all its
/// convex hull needs, and far fewer points to sort than the whole region.
fn row_ends(pixels: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let Some(top) = pixels.iter().map(|p| p.1).min() else {
        return Vec::new();
    };
    let bottom = pixels.iter().map(|p| p.1).max().unwrap_or(top);
    let mut ends = vec![(i32::MAX, i32::MIN); (bottom - top + 1) as usize];
    for &(x, y) in pixels {
        let e = &mut ends[(y - top) as usize];
        e.0 = e.0.min(x);
        e.1 = e.1.max(x);
    }
    ends.iter()
        .zip(top..)
        .flat_map(|(&(lo, hi), y)| [(lo, y), (hi, y)])
        .collect()
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, no
/// collinear points.
fn convex_hull(mut pts: Vec<(i32, i32)>) -> Vec<Point> {
    pts.sort_unstable();
    pts.dedup();
    if pts.len() < 3 {
        return pts
            .into_iter()
            .map(|(x, y)| [f64::from(x), f64::from(y)])
            .collect();
    }
    let cross = |o: (i32, i32), a: (i32, i32), b: (i32, i32)| {
        i64::from(a.0 - o.0) * i64::from(b.1 - o.1) - i64::from(a.1 - o.1) * i64::from(b.0 - o.0)
    };
    let mut hull: Vec<(i32, i32)> = Vec::with_capacity(2 * pts.len());
    for pass in 0..2 {
        let base = hull.len();
        let iter: Box<dyn Iterator<Item = &(i32, i32)>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= base + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull.into_iter()
        .map(|(x, y)| [f64::from(x), f64::from(y)])
        .collect()
}

/// A rotated rectangle: its four corners and side lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RotatedRect {
    corners: [Point; 4],
    sides: (f64, f64),
}

/// The minimum-area rectangle around a convex polygon (rotating
/// calipers: the best rectangle has a side on one of the hull's edges).
fn min_area_rect(hull: &[Point]) -> Option<RotatedRect> {
    if hull.len() < 3 {
        return None;
    }
    let mut best: Option<(f64, RotatedRect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in hull {
            let d = [p[0] - a[0], p[1] - a[1]];
            let pu = d[0] * u[0] + d[1] * u[1];
            let pv = d[0] * v[0] + d[1] * v[1];
            lo_u = lo_u.min(pu);
            hi_u = hi_u.max(pu);
            lo_v = lo_v.min(pv);
            hi_v = hi_v.max(pv);
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        if best.as_ref().is_none_or(|(b, _)| area < *b) {
            let at = |s: f64, t: f64| [a[0] + s * u[0] + t * v[0], a[1] + s * u[1] + t * v[1]];
            let rect = RotatedRect {
                corners: [
                    at(lo_u, lo_v),
                    at(hi_u, lo_v),
                    at(hi_u, hi_v),
                    at(lo_u, hi_v),
                ],
                sides: (hi_u - lo_u, hi_v - lo_v),
            };
            best = Some((area, rect));
        }
    }
    best.map(|(_, r)| r)
}

/// rapidocr's corner order for a rectangle: by x, then the upper of the
/// two left points first, the upper right second, lower right, lower left.
fn mini_box(rect: &RotatedRect) -> ([Point; 4], f64) {
    let mut p = rect.corners;
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if p[1][1] > p[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if p[3][1] > p[2][1] { (2, 3) } else { (3, 2) };
    ([p[i1], p[i2], p[i3], p[i4]], rect.sides.0.min(rect.sides.1))
}

/// Whether `q` lies inside or on the convex quadrilateral `quad`.
fn in_convex(quad: &[Point; 4], q: Point) -> bool {
    let mut sign = 0f64;
    for i in 0..4 {
        let (a, b) = (quad[i], quad[(i + 1) % 4]);
        let c = (b[0] - a[0]) * (q[1] - a[1]) - (b[1] - a[1]) * (q[0] - a[0]);
        if c.abs() < 1e-9 {
            continue;
        }
        if sign == 0.0 {
            sign = c.signum();
        } else if c.signum() != sign {
            return false;
        }
    }
    true
}

/// Mean probability inside the box, with the box's corners truncated to
/// whole pixels as rapidocr's polygon fill does.
fn box_score(prob: &[f32], width: usize, height: usize, corners: &[Point; 4]) -> f32 {
    // The corners' pixel span along one axis, clipped to the map.
    let span = |axis: usize, size: usize| {
        let clip = |v: f64| (v as i64).clamp(0, size as i64 - 1) as usize;
        let lo = corners.iter().map(|p| p[axis]).fold(f64::MAX, f64::min);
        let hi = corners.iter().map(|p| p[axis]).fold(f64::MIN, f64::max);
        (clip(lo.floor()), clip(hi.ceil()))
    };
    let (xmin, xmax) = span(0, width);
    let (ymin, ymax) = span(1, height);
    let quad = corners.map(|p| [(p[0] - xmin as f64).trunc(), (p[1] - ymin as f64).trunc()]);
    let (mut sum, mut count) = (0f64, 0usize);
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if in_convex(&quad, [(x - xmin) as f64, (y - ymin) as f64]) {
                sum += f64::from(prob[y * width + x]);
                count += 1;
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        (sum / count as f64) as f32
    }
}

/// Clipper's default arc tolerance: how far a rounded corner's chords may
/// stray from the true arc, in pixels.
const ARC_TOLERANCE: f64 = 0.25;

/// Grows a box by `distance` with rounded corners, as rapidocr's polygon
/// offsetting (Clipper with round joins) does: corners truncated to whole
/// pixels, each edge pushed out along its normal, each corner replaced by
/// an arc of chords, the points rounded to whole pixels.
fn unclip(corners: &[Point; 4], distance: f64) -> Vec<(i32, i32)> {
    let mut poly: Vec<Point> = corners
        .iter()
        .map(|p| [p[0].trunc(), p[1].trunc()])
        .collect();
    poly.dedup();
    if poly.len() > 1 && poly.first() == poly.last() {
        poly.pop();
    }
    let n = poly.len();
    if n < 3 || distance <= 0.0 {
        return poly.iter().map(|p| (p[0] as i32, p[1] as i32)).collect();
    }
    let signed_area: f64 = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    if signed_area < 0.0 {
        poly.reverse();
    }
    let normals: Vec<Point> = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len = (dx * dx + dy * dy).sqrt().max(1e-12);
            [dy / len, -dx / len]
        })
        .collect();
    let tolerance = ARC_TOLERANCE.min(distance * ARC_TOLERANCE);
    let steps_per_turn = (std::f64::consts::PI / (1.0 - tolerance / distance).acos())
        .min(distance * std::f64::consts::PI);
    let step = std::f64::consts::TAU / steps_per_turn;
    let steps_per_rad = steps_per_turn / std::f64::consts::TAU;
    let round = |p: Point, v: Point| {
        (
            (p[0] + v[0] * distance).round() as i32,
            (p[1] + v[1] * distance).round() as i32,
        )
    };
    let mut out = Vec::new();
    for j in 0..n {
        let k = (j + n - 1) % n;
        let (nk, nj) = (normals[k], normals[j]);
        let sin_a = nk[0] * nj[1] - nj[0] * nk[1];
        let cos_a = nk[0] * nj[0] + nk[1] * nj[1];
        if (sin_a * distance).abs() < 1.0 && cos_a > 0.0 {
            out.push(round(poly[j], nk));
            continue;
        }
        let turns =
            ((steps_per_rad * sin_a.clamp(-1.0, 1.0).atan2(cos_a).abs()).round() as usize).max(1);
        let mut v = nk;
        for _ in 0..turns {
            out.push(round(poly[j], v));
            v = [
                v[0] * step.cos() - step.sin() * v[1],
                v[0] * step.sin() + v[1] * step.cos(),
            ];
        }
        out.push(round(poly[j], nj));
    }
    out
}

/// rapidocr's smallest box side (before and, plus two, after unclipping).
const MIN_SIZE: f64 = 3.0;

/// Text boxes in the working image's pixels from the network's
/// probability map (`map_h` x `map_w`), for a working image of
/// `dest_w` x `dest_h`: corners clockwise from top-left, boxes sorted
/// top-to-bottom, then left-to-right within a line.
pub fn postprocess(
    prob: &[f32],
    map_w: usize,
    map_h: usize,
    dest_w: usize,
    dest_h: usize,
    p: &DetParams,
) -> Vec<[[f32; 2]; 4]> {
    let text: Vec<bool> = prob.iter().map(|&v| v > p.thresh).collect();
    // Dilation with a 2x2 kernel anchored at its lower-right cell.
    let mut mask = vec![false; text.len()];
    for y in 0..map_h {
        for x in 0..map_w {
            mask[y * map_w + x] = text[y * map_w + x]
                || (x > 0 && text[y * map_w + x - 1])
                || (y > 0 && text[(y - 1) * map_w + x])
                || (x > 0 && y > 0 && text[(y - 1) * map_w + x - 1]);
        }
    }
    let mut boxes = Vec::new();
    for pixels in regions(&mask, map_w, map_h)
        .into_iter()
        .take(p.max_candidates)
    {
        let Some(rect) = min_area_rect(&convex_hull(row_ends(&pixels))) else {
            continue;
        };
        let (corners, side) = mini_box(&rect);
        if side < MIN_SIZE {
            continue;
        }
        if box_score(prob, map_w, map_h, &corners) < p.box_thresh {
            continue;
        }
        let area = rect.sides.0 * rect.sides.1;
        let perimeter = 2.0 * (rect.sides.0 + rect.sides.1);
        let grown = unclip(&corners, area * f64::from(p.unclip_ratio) / perimeter);
        let Some(grown) = min_area_rect(&convex_hull(grown)) else {
            continue;
        };
        let (corners, side) = mini_box(&grown);
        if side < MIN_SIZE + 2.0 {
            continue;
        }
        let scale = |v: f64, from: usize, to: usize| {
            (v / from as f64 * to as f64)
                .round_ties_even()
                .clamp(0.0, to as f64)
        };
        let scaled = corners.map(|c| [scale(c[0], map_w, dest_w), scale(c[1], map_h, dest_h)]);
        let ordered = order_clockwise(scaled).map(|c| {
            [
                c[0].clamp(0.0, dest_w as f64 - 1.0).trunc(),
                c[1].clamp(0.0, dest_h as f64 - 1.0).trunc(),
            ]
        });
        let dist = |a: Point, b: Point| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if dist(ordered[0], ordered[1]).trunc() <= 3.0
            || dist(ordered[0], ordered[3]).trunc() <= 3.0
        {
            continue;
        }
        boxes.push(ordered.map(|c| [c[0] as f32, c[1] as f32]));
    }
    sort_reading_order(&mut boxes);
    boxes
}

/// Top-left, top-right, bottom-right, bottom-left: the two leftmost points
/// (by x) are the left side, each side ordered by y.
fn order_clockwise(mut p: [Point; 4]) -> [Point; 4] {
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let by_y = |a: &Point, b: &Point| a[1].total_cmp(&b[1]);
    let mut left = [p[0], p[1]];
    let mut right = [p[2], p[3]];
    left.sort_by(by_y);
    right.sort_by(by_y);
    [left[0], right[0], right[1], left[1]]
}

/// rapidocr's reading order: by top-left corner (y, then x), then boxes
/// whose tops are within 10 pixels are put left to right.
fn sort_reading_order(boxes: &mut [[[f32; 2]; 4]]) {
    boxes.sort_by(|a, b| {
        a[0][1]
            .total_cmp(&b[0][1])
            .then(a[0][0].total_cmp(&b[0][0]))
    });
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1][0][1] - boxes[j][0][1]).abs() < 10.0
                && boxes[j + 1][0][0] < boxes[j][0][0]
            {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_and_rectangle_of_an_axis_aligned_block() {
        let pixels: Vec<(i32, i32)> = (2..12).flat_map(|x| (5..9).map(move |y| (x, y))).collect();
        let hull = convex_hull(pixels);
        assert_eq!(hull.len(), 4);
        let rect = min_area_rect(&hull).unwrap();
        let (corners, side) = mini_box(&rect);
        assert_eq!(side, 3.0);
        assert_eq!(corners, [[2.0, 5.0], [11.0, 5.0], [11.0, 8.0], [2.0, 8.0]]);
    }

    #[test]
    fn rectangle_of_a_rotated_bar_follows_its_slant() {
        // A one-pixel-thick diagonal line thickened to 3 along x.
        let pixels: Vec<(i32, i32)> = (0..20)
            .flat_map(|i| (0..3).map(move |d| (i + d, i)))
            .collect();
        let rect = min_area_rect(&convex_hull(pixels)).unwrap();
        let (long, short) = (
            rect.sides.0.max(rect.sides.1),
            rect.sides.0.min(rect.sides.1),
        );
        // Projections on (1,1)/sqrt2 span 0..40/sqrt2, on (1,-1)/sqrt2 0..2/sqrt2.
        assert!((long - 20.0 * 2f64.sqrt()).abs() < 1e-6, "{rect:?}");
        assert!((short - 2f64.sqrt()).abs() < 1e-6, "{rect:?}");
    }

    #[test]
    fn row_ends_keep_the_hull() {
        let pixels: Vec<(i32, i32)> = (0..30)
            .flat_map(|y| (y / 3..40 - y).map(move |x| (x, y)))
            .collect();
        assert_eq!(convex_hull(row_ends(&pixels)), convex_hull(pixels));
    }

    #[test]
    fn regions_join_diagonal_neighbours_only() {
        let mask = [
            true, false, false, false, //
            false, true, false, true, //
            false, false, false, true,
        ];
        let r = regions(&mask, 4, 3);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len(), 2);
        assert_eq!(r[1].len(), 2);
    }

    #[test]
    fn unclip_grows_each_side_with_rounded_corners() {
        let corners = [[0.0, 0.0], [10.0, 0.0], [10.0, 4.0], [0.0, 4.0]];
        let grown = unclip(&corners, 2.0);
        let rect = min_area_rect(&convex_hull(grown.clone())).unwrap();
        assert_eq!(rect.sides, (14.0, 8.0));
        // Corner arcs stay within the distance (plus rounding).
        assert!(grown.iter().all(|&(x, y)| {
            let dx = (f64::from(x) - 5.0).abs() - 5.0;
            let dy = (f64::from(y) - 2.0).abs() - 2.0;
            dx.max(0.0).hypot(dy.max(0.0)) <= 2.0 + 0.75
        }));
        assert!(grown.len() > 8, "{grown:?}");
    }

    #[test]
    fn a_block_of_text_probability_becomes_one_grown_box() {
        let (w, h) = (64, 32);
        let mut prob = vec![0.0f32; w * h];
        for y in 10..20 {
            for x in 8..50 {
                prob[y * w + x] = 0.9;
            }
        }
        let boxes = postprocess(&prob, w, h, 2 * w, 2 * h, &DetParams::default());
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // rapidocr's DBPostProcess gives [[4, 8], [112, 8], [112, 52], [4, 52]]
        // for this map.
        assert_eq!(b, [[4.0, 8.0], [112.0, 8.0], [112.0, 52.0], [4.0, 52.0]]);
    }

    #[test]
    fn faint_and_tiny_regions_give_no_box() {
        let (w, h) = (32, 32);
        let mut prob = vec![0.0f32; w * h];
        prob[5 * w + 5] = 0.9;
        for y in 15..25 {
            for x in 5..25 {
                prob[y * w + x] = 0.35;
            }
        }
        assert!(postprocess(&prob, w, h, w, h, &DetParams::default()).is_empty());
    }

    #[test]
    fn reading_order_puts_a_line_left_to_right() {
        let at = |x: f32, y: f32| [[x, y], [x + 5.0, y], [x + 5.0, y + 5.0], [x, y + 5.0]];
        let mut boxes = vec![at(50.0, 100.0), at(60.0, 3.0), at(10.0, 8.0)];
        sort_reading_order(&mut boxes);
        assert_eq!(boxes, vec![at(10.0, 8.0), at(60.0, 3.0), at(50.0, 100.0)]);
    }

    #[test]
    fn preprocess_scales_the_short_side_to_the_limit_in_multiples_of_32() {
        let img = Image {
            width: 200,
            height: 100,
            data: vec![255; 200 * 100 * 3],
        };
        let input = preprocess(img.view(), &DetParams::default()).unwrap();
        assert_eq!((input.height, input.width), (736, 1472));
        assert!(input.working.is_none());
        assert!(
            input
                .tensor
                .chunks_exact(4)
                .all(|v| v == 1f32.to_le_bytes())
        );
        // A flat strip gets black bands: 400/8 = 50 -> 100 rows, 30 each side.
        let strip = Image {
            width: 400,
            height: 40,
            data: vec![0; 400 * 40 * 3],
        };
        let input = preprocess(strip.view(), &DetParams::default()).unwrap();
        let working = input.working.unwrap();
        assert_eq!((working.width, working.height), (400, 100));
        assert_eq!(input.transform.pad_top, 30.0);
        assert_eq!(input.transform.to_original([10.0, 50.0]), [10.0, 20.0]);
        let line = Image {
            width: 2000,
            height: 1,
            data: vec![0; 2000 * 3],
        };
        let err = preprocess(line.view(), &DetParams::default()).unwrap_err();
        assert!(
            err.message().contains("aspect ratio is too extreme"),
            "{err:?}"
        );
    }
}
