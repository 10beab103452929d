//! The OCR backends: the native pre- and post-processing steps of the `ocr`
//! ensemble (PP-OCR detection, direction classification and recognition
//! networks served by the ONNX Runtime backend in between). Each step is a
//! backend of its own, so each is also a model a client can call alone.
//!
//! | backend               | inputs → outputs |
//! | --------------------- | ---------------- |
//! | `ocr_decode_image`    | `IMAGE_BYTES` BYTES [1] (PNG or JPEG) → `IMAGE` UINT8 [h,w,3] (BGR) |
//! | `ocr_det_preprocess`  | `IMAGE` → `DET_INPUT` FP32 [1,3,H,W], `DET_IMAGE` UINT8 [h',w',3] (the image boxes refer to), `TRANSFORM` FP32 [6] |
//! | `ocr_det_postprocess` | `DET_PROB` FP32 [1,1,H,W], `DET_IMAGE` → `BOXES` FP32 [n,4,2] |
//! | `ocr_crop`            | `DET_IMAGE`, `BOXES` → `CROPS` UINT8 [n,hmax,wmax,3], `CROP_SIZES` INT32 [n,2] (one 1x1 stand-in crop when there are no boxes, so the networks never get an empty batch) |
//! | `ocr_cls_preprocess`  | `CROPS`, `CROP_SIZES` → `CLS_INPUT` FP32 [n,3,48,192] |
//! | `ocr_rec_preprocess`  | `CROPS`, `CROP_SIZES`, `CLS_PROB` FP32 [n,2] → `REC_INPUT` FP32 [n,3,48,W] |
//! | `ocr_rec_postprocess` | `REC_PROB` FP32 [max(n,1),T,C], `BOXES`, `TRANSFORM` → `TEXT` BYTES [m], `TEXT_BOXES` FP32 [m,4,2], `TEXT_SCORES` FP32 [m] |
//!
//! Tensor names are fixed; a configuration must declare exactly these
//! inputs and outputs (dims as in `model_repository/ocr_*`). Thresholds
//! come from the configuration's `parameters` with rapidocr's values as
//! defaults. Calls [`image`], [`detect`] and [`recognize`] for the work.

pub mod detect;
pub mod image;
pub mod recognize;

use std::sync::Arc;

use bytes::Bytes;

use super::{Backend, ExecRequest, ModelContext, ModelInstance};
use crate::core::proto::ModelConfig;
use crate::core::tensor::{push_bytes_element, split_bytes_elements};
use crate::core::{DataType, Error, Result, Tensor};
use detect::{DetParams, Transform};
use image::{Image, View};

/// Every OCR step backend.
pub fn all() -> Vec<Arc<dyn Backend>> {
    STEPS
        .iter()
        .map(|s| Arc::new(*s) as Arc<dyn Backend>)
        .collect()
}

/// One step: its backend name, tensor signature and how it runs.
#[derive(Clone, Copy)]
struct Step {
    name: &'static str,
    inputs: &'static [(&'static str, DataType)],
    outputs: &'static [(&'static str, DataType)],
    run: fn(&Settings, &ExecRequest<'_>) -> Result<Vec<Tensor>>,
}

const U8: DataType = DataType::Uint8;
const F32: DataType = DataType::Fp32;

const STEPS: &[Step] = &[
    Step {
        name: "ocr_decode_image",
        inputs: &[("IMAGE_BYTES", DataType::Bytes)],
        outputs: &[("IMAGE", U8)],
        run: decode_image,
    },
    Step {
        name: "ocr_det_preprocess",
        inputs: &[("IMAGE", U8)],
        outputs: &[("DET_INPUT", F32), ("DET_IMAGE", U8), ("TRANSFORM", F32)],
        run: det_preprocess,
    },
    Step {
        name: "ocr_det_postprocess",
        inputs: &[("DET_PROB", F32), ("DET_IMAGE", U8)],
        outputs: &[("BOXES", F32)],
        run: det_postprocess,
    },
    Step {
        name: "ocr_crop",
        inputs: &[("DET_IMAGE", U8), ("BOXES", F32)],
        outputs: &[("CROPS", U8), ("CROP_SIZES", DataType::Int32)],
        run: crop,
    },
    Step {
        name: "ocr_cls_preprocess",
        inputs: &[("CROPS", U8), ("CROP_SIZES", DataType::Int32)],
        outputs: &[("CLS_INPUT", F32)],
        run: cls_preprocess,
    },
    Step {
        name: "ocr_rec_preprocess",
        inputs: &[
            ("CROPS", U8),
            ("CROP_SIZES", DataType::Int32),
            ("CLS_PROB", F32),
        ],
        outputs: &[("REC_INPUT", F32)],
        run: rec_preprocess,
    },
    Step {
        name: "ocr_rec_postprocess",
        inputs: &[("REC_PROB", F32), ("BOXES", F32), ("TRANSFORM", F32)],
        outputs: &[
            ("TEXT", DataType::Bytes),
            ("TEXT_BOXES", F32),
            ("TEXT_SCORES", F32),
        ],
        run: rec_postprocess,
    },
];

/// A step instance's configuration-derived settings.
struct Settings {
    det: DetParams,
    /// Classifier probability above which a crop is turned 180 degrees.
    cls_thresh: f32,
    /// Lines scoring below this are dropped.
    text_score: f32,
    /// The recognizer's alphabet (only `ocr_rec_postprocess` has one).
    alphabet: Option<recognize::Alphabet>,
}

fn param<T: std::str::FromStr>(config: &ModelConfig, key: &str, default: T) -> Result<T> {
    match config.parameters.get(key) {
        None => Ok(default),
        Some(p) => p.string_value.trim().parse().map_err(|_| {
            Error::invalid_arg(format!(
                "model '{}': parameter '{key}' must be a number, got '{}'",
                config.name, p.string_value
            ))
        }),
    }
}

impl Settings {
    fn from_context(step: &Step, ctx: &ModelContext) -> Result<Settings> {
        let c = &ctx.config;
        let d = DetParams::default();
        let det = DetParams {
            limit_side_len: param(c, "limit_side_len", d.limit_side_len)?,
            thresh: param(c, "thresh", d.thresh)?,
            box_thresh: param(c, "box_thresh", d.box_thresh)?,
            max_candidates: param(c, "max_candidates", d.max_candidates)?,
            unclip_ratio: param(c, "unclip_ratio", d.unclip_ratio)?,
            ..d
        };
        if det.limit_side_len == 0 {
            return Err(Error::invalid_arg(format!(
                "model '{}': parameter 'limit_side_len' must be positive",
                c.name
            )));
        }
        let alphabet = if step.name == "ocr_rec_postprocess" {
            let file = c
                .parameters
                .get("character_file")
                .map_or("keys.txt", |p| p.string_value.as_str());
            let path = ctx.version_path.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::unavailable(format!(
                    "model '{}': cannot read the recognizer's character dictionary {}: {e} (scripts/fetch-ocr-models.sh writes it)",
                    c.name,
                    path.display()
                ))
            })?;
            Some(recognize::Alphabet::from_dictionary(&text))
        } else {
            None
        };
        Ok(Settings {
            det,
            cls_thresh: param(c, "cls_thresh", 0.9)?,
            text_score: param(c, "text_score", 0.5)?,
            alphabet,
        })
    }
}

impl Backend for Step {
    fn name(&self) -> &str {
        self.name
    }

    fn create_instance(&self, ctx: &ModelContext, _index: usize) -> Result<Box<dyn ModelInstance>> {
        let c = &ctx.config;
        let declared_in: Vec<(&str, i32)> = c
            .input
            .iter()
            .map(|i| (i.name.as_str(), i.data_type))
            .collect();
        let declared_out: Vec<(&str, i32)> = c
            .output
            .iter()
            .map(|o| (o.name.as_str(), o.data_type))
            .collect();
        let want = |list: &'static [(&'static str, DataType)]| -> Vec<(&str, i32)> {
            list.iter().map(|(n, d)| (*n, d.config_enum())).collect()
        };
        let describe = |list: &[(&str, DataType)]| {
            list.iter()
                .map(|(n, d)| format!("{n} {}", d.config_name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut declared_in_sorted = declared_in.clone();
        let mut declared_out_sorted = declared_out.clone();
        let mut want_in = want(self.inputs);
        let mut want_out = want(self.outputs);
        declared_in_sorted.sort_unstable();
        declared_out_sorted.sort_unstable();
        want_in.sort_unstable();
        want_out.sort_unstable();
        if declared_in_sorted != want_in || declared_out_sorted != want_out {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend '{}' takes inputs [{}] and produces outputs [{}]; declare exactly those in config.pbtxt",
                c.name,
                self.name,
                describe(self.inputs),
                describe(self.outputs)
            )));
        }
        if c.max_batch_size != 0 {
            return Err(Error::invalid_arg(format!(
                "model '{}': backend '{}' handles one image per request; set max_batch_size: 0",
                c.name, self.name
            )));
        }
        Ok(Box::new(StepInstance {
            run: self.run,
            settings: Settings::from_context(self, ctx)?,
        }))
    }
}

struct StepInstance {
    run: fn(&Settings, &ExecRequest<'_>) -> Result<Vec<Tensor>>,
    settings: Settings,
}

impl ModelInstance for StepInstance {
    fn execute(&mut self, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
        (self.run)(&self.settings, request)
    }
}

fn dims(t: &Tensor) -> Vec<usize> {
    t.shape.iter().map(|&d| d.max(0) as usize).collect()
}

/// The input's dims, checked for rank and fixed sizes (`None` = any).
fn expect_shape(t: &Tensor, want: &[Option<usize>]) -> Result<Vec<usize>> {
    let d = dims(t);
    let fits = d.len() == want.len() && d.iter().zip(want).all(|(a, w)| w.is_none_or(|w| w == *a));
    if !fits {
        let wanted: Vec<String> = want
            .iter()
            .map(|w| w.map_or("-1".to_string(), |v| v.to_string()))
            .collect();
        return Err(Error::invalid_arg(format!(
            "input '{}': expected shape [{}], got {}",
            t.name,
            wanted.join(","),
            crate::core::tensor::shape_to_string(&t.shape)
        )));
    }
    Ok(d)
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn float_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
    let mut data = Vec::with_capacity(values.len() * 4);
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    Tensor {
        name: name.to_string(),
        datatype: F32,
        shape: shape.into_iter().map(|d| d as i64).collect(),
        data: Bytes::from(data),
    }
}

/// A tensor of FP32 values already in little-endian bytes.
fn f32_bytes_tensor(name: &str, shape: Vec<usize>, data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.to_string(),
        datatype: F32,
        shape: shape.into_iter().map(|d| d as i64).collect(),
        data: Bytes::from(data),
    }
}

fn image_tensor(name: &str, img: Image) -> Tensor {
    Tensor {
        name: name.to_string(),
        datatype: U8,
        shape: vec![img.height as i64, img.width as i64, 3],
        data: Bytes::from(img.data),
    }
}

fn image_view<'a>(t: &'a Tensor) -> Result<View<'a>> {
    let d = expect_shape(t, &[None, None, Some(3)])?;
    if d[0] == 0 || d[1] == 0 {
        return Err(Error::invalid_arg(format!(
            "input '{}': the image is empty ({}x{} pixels)",
            t.name, d[1], d[0]
        )));
    }
    Ok(View {
        width: d[1],
        height: d[0],
        data: &t.data,
    })
}

fn boxes(t: &Tensor) -> Result<Vec<[[f32; 2]; 4]>> {
    expect_shape(t, &[None, Some(4), Some(2)])?;
    Ok(floats(t)
        .chunks_exact(8)
        .map(|b| [[b[0], b[1]], [b[2], b[3]], [b[4], b[5]], [b[6], b[7]]])
        .collect())
}

fn crops(request: &ExecRequest<'_>) -> Result<Vec<Image>> {
    let packed = request.input("CROPS")?;
    let d = expect_shape(packed, &[None, None, None, Some(3)])?;
    let sizes = request.input("CROP_SIZES")?;
    expect_shape(sizes, &[Some(d[0]), Some(2)])?;
    let sizes: Vec<[usize; 2]> = sizes
        .data
        .chunks_exact(8)
        .map(|c| {
            let h = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let w = i32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            [h.max(0) as usize, w.max(0) as usize]
        })
        .collect();
    recognize::unpack(&packed.data, [d[0], d[1], d[2], d[3]], &sizes)
}

fn decode_image(_: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let input = request.input("IMAGE_BYTES")?;
    let elements = split_bytes_elements(&input.data)?;
    let [encoded] = elements.as_slice() else {
        return Err(Error::invalid_arg(format!(
            "input 'IMAGE_BYTES': expected one encoded image, got {}",
            elements.len()
        )));
    };
    Ok(vec![image_tensor("IMAGE", image::decode(encoded)?)])
}

fn det_preprocess(s: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let input = request.input("IMAGE")?;
    let src = image_view(input)?;
    let prepared = detect::preprocess(src, &s.det)?;
    let det_image = match prepared.working {
        Some(img) => image_tensor("DET_IMAGE", img),
        None => Tensor {
            name: "DET_IMAGE".to_string(),
            ..input.clone()
        },
    };
    Ok(vec![
        f32_bytes_tensor(
            "DET_INPUT",
            vec![1, 3, prepared.height, prepared.width],
            prepared.tensor,
        ),
        det_image,
        float_tensor("TRANSFORM", vec![6], &prepared.transform.to_array()),
    ])
}

fn det_postprocess(s: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let prob = request.input("DET_PROB")?;
    let d = expect_shape(prob, &[Some(1), Some(1), None, None])?;
    let img = image_view(request.input("DET_IMAGE")?)?;
    let found = detect::postprocess(&floats(prob), d[3], d[2], img.width, img.height, &s.det);
    let flat: Vec<f32> = found.iter().flatten().flatten().copied().collect();
    Ok(vec![float_tensor("BOXES", vec![found.len(), 4, 2], &flat)])
}

fn crop(_: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let img = image_view(request.input("DET_IMAGE")?)?;
    let mut cut = boxes(request.input("BOXES")?)?
        .iter()
        .map(|b| recognize::crop(img, b))
        .collect::<Result<Vec<_>>>()?;
    if cut.is_empty() {
        // An ensemble is a fixed graph: the classifier and the recognizer
        // run whatever was found, and they fail on an empty batch. One
        // black pixel stands in; ocr_rec_postprocess reads only as many
        // lines as there are boxes.
        cut.push(Image {
            width: 1,
            height: 1,
            data: vec![0; 3],
        });
    }
    let packed = recognize::pack(&cut);
    let sizes: Vec<u8> = packed
        .sizes
        .iter()
        .flatten()
        .flat_map(|&v| (v as i32).to_le_bytes())
        .collect();
    Ok(vec![
        Tensor {
            name: "CROPS".to_string(),
            datatype: U8,
            shape: packed.shape.iter().map(|&d| d as i64).collect(),
            data: Bytes::from(packed.data),
        },
        Tensor {
            name: "CROP_SIZES".to_string(),
            datatype: DataType::Int32,
            shape: vec![cut.len() as i64, 2],
            data: Bytes::from(sizes),
        },
    ])
}

fn cls_preprocess(_: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let crops = crops(request)?;
    Ok(vec![f32_bytes_tensor(
        "CLS_INPUT",
        vec![crops.len(), 3, recognize::LINE_HEIGHT, recognize::CLS_WIDTH],
        recognize::cls_input(&crops),
    )])
}

fn rec_preprocess(s: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let mut crops = crops(request)?;
    let probs = request.input("CLS_PROB")?;
    expect_shape(probs, &[Some(crops.len()), Some(2)])?;
    recognize::apply_direction(&mut crops, &floats(probs), s.cls_thresh);
    let (input, width) = recognize::rec_input(&crops);
    Ok(vec![f32_bytes_tensor(
        "REC_INPUT",
        vec![crops.len(), 3, recognize::LINE_HEIGHT, width],
        input,
    )])
}

fn rec_postprocess(s: &Settings, request: &ExecRequest<'_>) -> Result<Vec<Tensor>> {
    let alphabet = s
        .alphabet
        .as_ref()
        .expect("ocr_rec_postprocess instances load their alphabet");
    let found = boxes(request.input("BOXES")?)?;
    let probs = request.input("REC_PROB")?;
    // ocr_crop sends one stand-in crop when there are no boxes.
    let rows = found.len().max(1);
    expect_shape(probs, &[Some(rows), None, Some(alphabet.len())])?;
    let transform = request.input("TRANSFORM")?;
    expect_shape(transform, &[Some(6)])?;
    let t = floats(transform);
    let transform = Transform::from_array([t[0], t[1], t[2], t[3], t[4], t[5]]);
    let probs = floats(probs);
    let per_line = (probs.len() / rows).max(1);
    let (mut text, mut kept, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (b, line) in found.iter().zip(probs.chunks(per_line)) {
        let (s_text, score) = alphabet.decode(line);
        if score >= s.text_score {
            push_bytes_element(&mut text, s_text.as_bytes());
            kept.extend(b.iter().flat_map(|&p| transform.to_original(p)));
            scores.push(score);
        }
    }
    Ok(vec![
        Tensor {
            name: "TEXT".to_string(),
            datatype: DataType::Bytes,
            shape: vec![scores.len() as i64],
            data: Bytes::from(text),
        },
        float_tensor("TEXT_BOXES", vec![scores.len(), 4, 2], &kept),
        float_tensor("TEXT_SCORES", vec![scores.len()], &scores),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CancelFlag, Parameters};

    fn run(step: &str, inputs: Vec<Tensor>, settings: &Settings) -> Result<Vec<Tensor>> {
        let s = STEPS.iter().find(|s| s.name == step).unwrap();
        let cancel = CancelFlag::default();
        let params = Parameters::default();
        (s.run)(
            settings,
            &ExecRequest {
                inputs: &inputs,
                outputs: &[],
                parameters: &params,
                cancel: &cancel,
                bindings: &crate::core::NO_BINDINGS,
            },
        )
    }

    fn settings() -> Settings {
        Settings {
            det: DetParams::default(),
            cls_thresh: 0.9,
            text_score: 0.5,
            alphabet: Some(recognize::Alphabet::from_dictionary("a\nb")),
        }
    }

    #[test]
    fn every_step_is_a_distinct_backend() {
        let names: Vec<String> = all().iter().map(|b| b.name().to_string()).collect();
        assert_eq!(names.len(), 7);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn decode_refuses_two_images_and_garbage() {
        let mut two = Vec::new();
        push_bytes_element(&mut two, b"x");
        push_bytes_element(&mut two, b"y");
        let t = Tensor::new("IMAGE_BYTES", DataType::Bytes, vec![2], Bytes::from(two)).unwrap();
        let err = run("ocr_decode_image", vec![t], &settings()).unwrap_err();
        assert!(
            err.message().contains("expected one encoded image, got 2"),
            "{err:?}"
        );
    }

    #[test]
    fn crops_flow_from_boxes_to_line_inputs() {
        let img = Tensor::new(
            "DET_IMAGE",
            U8,
            vec![20, 40, 3],
            Bytes::from(vec![200u8; 2400]),
        )
        .unwrap();
        let b = float_tensor(
            "BOXES",
            vec![1, 4, 2],
            &[2.0, 2.0, 38.0, 2.0, 38.0, 14.0, 2.0, 14.0],
        );
        let out = run("ocr_crop", vec![img, b], &settings()).unwrap();
        assert_eq!(out[0].shape, vec![1, 12, 36, 3]);
        assert_eq!(&out[1].data[..], &[12, 0, 0, 0, 36, 0, 0, 0]);
        let cls = run("ocr_cls_preprocess", out.clone(), &settings()).unwrap();
        assert_eq!(cls[0].shape, vec![1, 3, 48, 192]);
        let mut inputs = out;
        inputs.push(float_tensor("CLS_PROB", vec![1, 2], &[0.1, 0.9]));
        let rec = run("ocr_rec_preprocess", inputs.clone(), &settings()).unwrap();
        assert_eq!(rec[0].shape, vec![1, 3, 48, 320]);
        inputs[2] = float_tensor("CLS_PROB", vec![2, 2], &[0.1, 0.9, 0.1, 0.9]);
        let err = run("ocr_rec_preprocess", inputs, &settings()).unwrap_err();
        assert!(
            err.message()
                .contains("input 'CLS_PROB': expected shape [1,2]"),
            "{err:?}"
        );
    }

    #[test]
    fn no_boxes_still_feed_the_networks_one_crop_and_read_no_line() {
        let img = Tensor::new("DET_IMAGE", U8, vec![4, 4, 3], Bytes::from(vec![9u8; 48])).unwrap();
        let none = float_tensor("BOXES", vec![0, 4, 2], &[]);
        let out = run("ocr_crop", vec![img, none.clone()], &settings()).unwrap();
        assert_eq!(out[0].shape, vec![1, 1, 1, 3]);
        let probs = float_tensor("REC_PROB", vec![1, 1, 4], &[0.1, 0.9, 0.0, 0.0]);
        let transform = float_tensor("TRANSFORM", vec![6], &[1.0, 1.0, 0.0, 0.0, 4.0, 4.0]);
        let read = run(
            "ocr_rec_postprocess",
            vec![probs, none, transform],
            &settings(),
        )
        .unwrap();
        assert_eq!(read[0].shape, vec![0]);
        assert_eq!(read[1].shape, vec![0, 4, 2]);
        assert_eq!(read[2].shape, vec![0]);
    }

    #[test]
    fn recognition_keeps_confident_lines_in_client_pixels() {
        let b = float_tensor(
            "BOXES",
            vec![2, 4, 2],
            &[
                0.0, 40.0, 10.0, 40.0, 10.0, 50.0, 0.0, 50.0, //
                0.0, 60.0, 10.0, 60.0, 10.0, 70.0, 0.0, 70.0,
            ],
        );
        // Two steps per line: "ab" at 0.9 and "a" at 0.3.
        let probs = float_tensor(
            "REC_PROB",
            vec![2, 2, 4],
            &[
                0.0, 0.9, 0.1, 0.0, 0.0, 0.1, 0.9, 0.0, //
                0.7, 0.3, 0.0, 0.0, 0.7, 0.3, 0.0, 0.0,
            ],
        );
        let transform = float_tensor("TRANSFORM", vec![6], &[2.0, 1.0, 30.0, 0.0, 100.0, 100.0]);
        let out = run(
            "ocr_rec_postprocess",
            vec![probs, b, transform],
            &settings(),
        )
        .unwrap();
        assert_eq!(out[0].shape, vec![1]);
        assert_eq!(
            split_bytes_elements(&out[0].data).unwrap(),
            vec![b"ab".as_slice()]
        );
        assert_eq!(floats(&out[1])[..4], [0.0, 20.0, 10.0, 20.0]);
        assert!((floats(&out[2])[0] - 0.9).abs() < 1e-6);
    }
}
