//! Configuration parsing and validation, instance placement, and (where a
//! GPU is present) the backend end to end against the CPU references.

use std::path::PathBuf;

use super::*;
use crate::core::{Bindings, CancelFlag, Code, Parameters};
use crate::gpu::kernels::reference;
use crate::repository::config::parse_config_text;

/// A shipped model's configuration, embedded so the test binary runs
/// anywhere (the GPU machine has no checkout at the build's path).
fn shipped(model: &str) -> ModelConfig {
    let text = match model {
        "simple" => include_str!("../../../model_repository/simple/config.pbtxt"),
        "simple_cuda" => include_str!("../../../model_repository_gpu/simple_cuda/config.pbtxt"),
        "identity_cuda" => include_str!("../../../model_repository_gpu/identity_cuda/config.pbtxt"),
        "preprocess_cuda" => {
            include_str!("../../../model_repository_gpu/preprocess_cuda/config.pbtxt")
        }
        other => panic!("no shipped model {other}"),
    };
    parse_config_text(text).unwrap()
}

fn config(text: &str) -> ModelConfig {
    parse_config_text(text).unwrap()
}

fn context(config: ModelConfig) -> ModelContext {
    ModelContext {
        name: config.name.clone(),
        version: 1,
        model_path: PathBuf::from("/nonexistent"),
        version_path: PathBuf::from("/nonexistent/1"),
        config: Arc::new(config),
    }
}

fn spec_error(text: &str) -> String {
    parse_spec(&config(text)).unwrap_err().message().to_string()
}

const PREPROCESS_IO: &str = r#"
name: "p"
input [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
"#;

fn preprocess(parameters: &str) -> Result<Spec> {
    parse_spec(&config(&format!("{PREPROCESS_IO}\n{parameters}")))
}

fn kernel_parameter(kernel: &str) -> String {
    format!(r#"parameters {{ key: "kernel" value {{ string_value: "{kernel}" }} }}"#)
}

#[test]
fn shipped_models_parse() {
    assert_eq!(
        parse_spec(&shipped("simple_cuda")).unwrap(),
        Spec::AddSub {
            inputs: ["INPUT0".into(), "INPUT1".into()],
            outputs: ["OUTPUT0".into(), "OUTPUT1".into()],
            datatype: DataType::Int32,
        }
    );
    assert_eq!(
        parse_spec(&shipped("identity_cuda")).unwrap(),
        Spec::Identity {
            input: "INPUT0".into(),
            output: "OUTPUT0".into(),
            datatype: DataType::Fp32,
        }
    );
    let Spec::Preprocess {
        input,
        output,
        params,
        batched,
    } = parse_spec(&shipped("preprocess_cuda")).unwrap()
    else {
        panic!("preprocess_cuda is a preprocess model");
    };
    assert_eq!(
        (input.as_str(), output.as_str(), batched),
        ("IMAGE", "OUTPUT", false)
    );
    assert_eq!(
        (params.out_height, params.out_width, params.fp16),
        (224, 224, false)
    );
    assert_eq!(params.mean, [0.485, 0.456, 0.406]);
    assert_eq!(params.std, [0.229, 0.224, 0.225]);
    assert_eq!(params.scale, 1.0 / 255.0);

    // The GPU twin keeps `simple`'s interface exactly.
    let (simple, cuda) = (shipped("simple"), shipped("simple_cuda"));
    assert_eq!(simple.input, cuda.input);
    assert_eq!(simple.output, cuda.output);
    assert_eq!(simple.max_batch_size, cuda.max_batch_size);
    for (model, count) in [
        ("simple_cuda", 2),
        ("identity_cuda", 1),
        ("preprocess_cuda", 1),
    ] {
        let placements = placements(&shipped(model));
        assert_eq!(placements.len(), count, "{model}");
        assert!(
            placements
                .iter()
                .all(|p| (p.kind, p.device) == (GroupKind::Gpu, Some(0))),
            "{model}"
        );
    }
}

#[test]
fn numbers_and_channel_lists() {
    assert_eq!(parse_number("0.5"), Some(0.5));
    assert_eq!(parse_number("1/255"), Some(1.0 / 255.0));
    assert_eq!(parse_number(" 2 / 8 ".trim()), Some(0.25));
    assert_eq!(parse_number("1/0"), None);
    assert_eq!(parse_number("nan"), None);
    assert_eq!(parse_number("abc"), None);
    assert_eq!(parse_number(""), None);

    let with = |p: &str| {
        preprocess(&format!(
            "{}\nparameters {{ key: \"mean\" value {{ string_value: \"{p}\" }} }}",
            kernel_parameter("preprocess")
        ))
    };
    let mean = |p: &str| match with(p).unwrap() {
        Spec::Preprocess { params, .. } => params.mean,
        other => panic!("{other:?}"),
    };
    assert_eq!(mean("0.5"), [0.5; 3]);
    assert_eq!(mean("1, 2,3"), [1.0, 2.0, 3.0]);
    assert_eq!(mean("124/255,116/255,104/255")[0], 124.0 / 255.0);
    let e = with("1,2").unwrap_err();
    assert!(
        e.message().contains(
            "parameter 'mean' must be one number or three comma-separated numbers, got '1,2'"
        ),
        "{e}"
    );
    assert!(with("1,x,3").is_err());
}

#[test]
fn preprocess_defaults_and_dimension_parameters() {
    let Spec::Preprocess { params, .. } = preprocess(&kernel_parameter("preprocess")).unwrap()
    else {
        panic!("preprocess spec");
    };
    assert_eq!(
        params,
        Preprocess {
            out_height: 224,
            out_width: 224,
            mean: [0.0; 3],
            std: [1.0; 3],
            scale: 1.0,
            fp16: false,
        }
    );
    let dims = |dims: &str, parameters: &str| {
        parse_spec(&config(&format!(
            r#"name: "p"
input [ {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1, -1, 1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP16 dims: {dims} }} ]
{}
{parameters}"#,
            kernel_parameter("preprocess")
        )))
    };
    let Spec::Preprocess { params, .. } = dims(
        "[ 1, -1, -1 ]",
        r#"parameters { key: "out_height" value { string_value: "32" } }
parameters { key: "out_width" value { string_value: "48" } }"#,
    )
    .unwrap() else {
        panic!("preprocess spec");
    };
    assert_eq!(
        (params.out_height, params.out_width, params.fp16),
        (32, 48, true)
    );
    let e = dims("[ 1, -1, 48 ]", "").unwrap_err();
    assert!(e.message().contains("set parameter 'out_height'"), "{e}");
    let e = dims(
        "[ 1, 32, 48 ]",
        r#"parameters { key: "out_width" value { string_value: "47" } }"#,
    )
    .unwrap_err();
    assert!(
        e.message()
            .contains("'out_width' is 47 but the output's dims say 48"),
        "{e}"
    );
    let e = dims(
        "[ 1, -1, 48 ]",
        r#"parameters { key: "out_height" value { string_value: "0" } }"#,
    )
    .unwrap_err();
    assert!(e.message().contains("positive integer"), "{e}");
}

#[test]
fn configuration_errors_are_clear() {
    let add_sub = |dtype: &str, out1: &str| {
        format!(
            r#"name: "m"
input [ {{ name: "A" data_type: {dtype} dims: [ 4 ] }}, {{ name: "B" data_type: {dtype} dims: [ 4 ] }} ]
output [ {{ name: "S" data_type: {dtype} dims: [ 4 ] }}, {{ name: "D" data_type: {out1} dims: [ 4 ] }} ]
{}"#,
            kernel_parameter("add_sub")
        )
    };
    assert!(parse_spec(&config(&add_sub("TYPE_FP32", "TYPE_FP32"))).is_ok());
    assert_eq!(
        spec_error(&add_sub("TYPE_INT64", "TYPE_INT64")),
        "model 'm': backend 'cuda': kernel 'add_sub' takes TYPE_INT32 or TYPE_FP32, not TYPE_INT64"
    );
    assert_eq!(
        spec_error(&add_sub("TYPE_INT32", "TYPE_FP32")),
        "model 'm': backend 'cuda': kernel 'add_sub' needs one data_type throughout; 'D' is not TYPE_INT32"
    );

    let io = r#"name: "m"
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]"#;
    assert_eq!(
        spec_error(io),
        "model 'm': backend 'cuda': set parameter 'kernel' to 'add_sub', 'identity' or 'preprocess'"
    );
    assert_eq!(
        spec_error(&format!("{io}\n{}", kernel_parameter("softmax"))),
        "model 'm': backend 'cuda': unknown kernel 'softmax' (available: add_sub, identity, preprocess)"
    );
    assert_eq!(
        spec_error(&format!("{io}\n{}", kernel_parameter("add_sub"))),
        "model 'm': backend 'cuda': kernel 'add_sub' needs 2 input(s) and 2 output(s), the config has 1 and 1"
    );
    let bytes = io.replace("TYPE_FP32", "TYPE_STRING");
    assert!(
        spec_error(&format!("{bytes}\n{}", kernel_parameter("identity"))).contains("fixed-size")
    );
    let mixed = io.replacen("TYPE_FP32", "TYPE_INT32", 1);
    assert!(
        spec_error(&format!("{mixed}\n{}", kernel_parameter("identity"))).contains("fixed-size")
    );

    let pre = |input: &str, output: &str| {
        spec_error(&format!(
            r#"name: "m"
input [ {{ name: "IMAGE" {input} }} ]
output [ {{ name: "OUTPUT" {output} }} ]
{}"#,
            kernel_parameter("preprocess")
        ))
    };
    let fp32_out = "data_type: TYPE_FP32 dims: [ 3, 8, 8 ]";
    assert!(
        pre("data_type: TYPE_FP32 dims: [ -1, -1, 3 ]", fp32_out)
            .contains("takes a TYPE_UINT8 image")
    );
    assert!(
        pre("data_type: TYPE_UINT8 dims: [ -1, 3 ]", fp32_out).contains("takes a TYPE_UINT8 image")
    );
    assert!(
        pre(
            "data_type: TYPE_UINT8 dims: [ -1, -1, 4 ]",
            "data_type: TYPE_FP32 dims: [ 4, 8, 8 ]"
        )
        .contains("C 1 or 3")
    );
    assert!(
        pre(
            "data_type: TYPE_UINT8 dims: [ -1, -1, 3 ]",
            "data_type: TYPE_FP32 dims: [ 1, 8, 8 ]"
        )
        .contains("C 1 or 3")
    );
    assert!(
        pre(
            "data_type: TYPE_UINT8 dims: [ -1, -1, 3 ]",
            "data_type: TYPE_FP64 dims: [ 3, 8, 8 ]"
        )
        .contains("TYPE_FP32 or TYPE_FP16")
    );

    let e = preprocess(&format!(
        "{}\nparameters {{ key: \"std\" value {{ string_value: \"0.2, 0, 0.2\" }} }}",
        kernel_parameter("preprocess")
    ))
    .unwrap_err();
    assert!(
        e.message().contains("std[1] must be finite and non-zero"),
        "{e}"
    );
    let e = preprocess(&format!(
        "{}\nparameters {{ key: \"scale\" value {{ string_value: \"fast\" }} }}",
        kernel_parameter("preprocess")
    ))
    .unwrap_err();
    assert!(
        e.message()
            .contains("parameter 'scale' must be a finite number or fraction, got 'fast'"),
        "{e}"
    );
}

#[test]
fn image_shapes() {
    assert_eq!(
        image_shape("IMAGE", &[480, 640, 3], false).unwrap(),
        (
            1,
            Image {
                height: 480,
                width: 640,
                channels: 3
            }
        )
    );
    assert_eq!(
        image_shape("IMAGE", &[2, 4, 5, 1], true).unwrap(),
        (
            2,
            Image {
                height: 4,
                width: 5,
                channels: 1
            }
        )
    );
    assert!(
        image_shape("IMAGE", &[2, 4, 5, 1], false)
            .unwrap_err()
            .message()
            .contains("input 'IMAGE'")
    );
    assert!(image_shape("IMAGE", &[4, 5, 1], true).is_err());
    assert!(image_shape("IMAGE", &[], true).is_err());
    assert!(
        image_shape("IMAGE", &[1 << 33, 1, 3], false)
            .unwrap_err()
            .message()
            .contains("out of range")
    );
}

#[test]
fn cpu_instances_are_refused() {
    let mut c = shipped("simple_cuda");
    c.instance_group[0].kind = GroupKind::Cpu as i32;
    c.instance_group[0].gpus.clear();
    let e = Cuda.create_instance(&context(c), 0).err().unwrap();
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .starts_with("model 'simple_cuda': backend 'cuda': instances run on GPUs only"),
        "{e}"
    );
    assert!(e.message().contains("KIND_GPU"), "{e}");
    // No instance group at all means one CPU instance: refused too.
    let mut c = shipped("identity_cuda");
    c.instance_group.clear();
    assert!(Cuda.create_instance(&context(c), 0).is_err());
}

#[test]
fn registered_and_takes_device_memory() {
    let registry = super::super::BackendRegistry::with_builtins();
    let backend = registry.resolve(&shipped("simple_cuda")).unwrap();
    assert_eq!(backend.name(), "cuda");
    assert!(backend.takes_device_memory());
}

fn has_gpu() -> bool {
    crate::gpu::init().is_ok() && !crate::gpu::devices().is_empty()
}

#[test]
fn without_a_driver_instances_fail_with_the_reason() {
    assert!(!has_gpu(), "{}", crate::gpu::DRIVER_PRESENT);
    for model in ["simple_cuda", "identity_cuda", "preprocess_cuda"] {
        let e = Cuda
            .create_instance(&context(shipped(model)), 0)
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(
            e.message()
                .starts_with(&format!("model '{model}': instance ")),
            "{e}"
        );
        assert!(e.message().contains("GPU device 0"), "{e}");
        assert!(e.message().contains("CUDA"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// GPU tests

/// An instance of a shipped model on GPU 0; panics without a GPU (see
/// [`crate::gpu::require_gpu`]).
fn instance(model: &str) -> Box<dyn ModelInstance> {
    crate::gpu::require_gpu();
    Cuda.create_instance(&context(shipped(model)), 0).unwrap()
}

fn tensor(name: &str, datatype: DataType, shape: Vec<i64>, data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.into(),
        datatype,
        shape,
        data: Bytes::from(data),
    }
}

fn run(
    instance: &mut dyn ModelInstance,
    inputs: &[Tensor],
    outputs: &[&str],
    bindings: &Bindings,
) -> Result<Vec<Tensor>> {
    let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
    instance.execute(&ExecRequest {
        inputs,
        outputs: &outputs,
        parameters: &Parameters::default(),
        cancel: &CancelFlag::default(),
        bindings,
    })
}

fn ints(v: &[i32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_simple_cuda_matches_simple() {
    let mut instance = instance("simple_cuda");
    let a: Vec<i32> = (0..32).map(|i| i * 1_000_003 - 7).collect();
    let b: Vec<i32> = (0..32).map(|i| i32::MAX - i).collect();
    let inputs = [
        tensor("INPUT0", DataType::Int32, vec![2, 16], ints(&a)),
        tensor("INPUT1", DataType::Int32, vec![2, 16], ints(&b)),
    ];
    let out = run(
        instance.as_mut(),
        &inputs,
        &["OUTPUT0", "OUTPUT1"],
        &Bindings::default(),
    )
    .unwrap();
    let (sum, diff) = reference::add_sub_i32(&a, &b);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].name.as_str(), out[0].shape.as_slice()),
        ("OUTPUT0", &[2i64, 16][..])
    );
    assert_eq!(&out[0].data[..], &ints(&sum)[..]);
    assert_eq!(&out[1].data[..], &ints(&diff)[..]);
    // Only the outputs asked for are returned.
    let out = run(
        instance.as_mut(),
        &inputs,
        &["OUTPUT1"],
        &Bindings::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].data[..], &ints(&diff)[..]);

    // A batch runs request by request and synchronizes once.
    let outputs = vec!["OUTPUT0".to_string(), "OUTPUT1".to_string()];
    let (params, cancel, bindings) = (
        Parameters::default(),
        CancelFlag::default(),
        Bindings::default(),
    );
    let request = ExecRequest {
        inputs: &inputs,
        outputs: &outputs,
        parameters: &params,
        cancel: &cancel,
        bindings: &bindings,
    };
    let results = instance.execute_batch(&[request]);
    assert_eq!(&results[0].as_ref().unwrap()[0].data[..], &ints(&sum)[..]);
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_device_inputs_and_sinks() {
    struct DeviceSink(DeviceBytes);
    impl crate::core::OutputSink for DeviceSink {
        fn region(&self) -> &str {
            "test_region"
        }
        fn byte_size(&self) -> usize {
            self.0.len()
        }
        fn device(&self) -> Option<DeviceBytes> {
            Some(self.0.clone())
        }
        fn write(&self, _data: &[u8]) -> Result<()> {
            panic!("the backend writes device sinks itself");
        }
    }

    let mut instance = instance("identity_cuda");
    let data: Vec<u8> = (0..4096u32)
        .flat_map(|i| (i * 2_654_435_761).to_le_bytes())
        .collect();
    let len = data.len();
    let input = alloc(0, len).unwrap();
    crate::gpu::copy_from_host(&data, &input).unwrap();
    let sink = alloc(0, len).unwrap();
    let bindings = Bindings {
        device_inputs: vec![("INPUT0".into(), input.clone())],
        sinks: vec![("OUTPUT0".into(), Arc::new(DeviceSink(sink.clone())))],
    };
    let inputs = [tensor(
        "INPUT0",
        DataType::Fp32,
        vec![(len / 4) as i64],
        Vec::new(),
    )];
    let out = run(instance.as_mut(), &inputs, &["OUTPUT0"], &bindings).unwrap();
    assert!(
        out[0].data.is_empty(),
        "written into the sink, returned without data"
    );
    let mut back = vec![0u8; len];
    crate::gpu::copy_to_host(&sink, &mut back).unwrap();
    assert_eq!(back, data);

    // Device input, host output: downloaded from the client's memory.
    let bindings = Bindings {
        device_inputs: vec![("INPUT0".into(), input.clone())],
        sinks: Vec::new(),
    };
    let out = run(instance.as_mut(), &inputs, &["OUTPUT0"], &bindings).unwrap();
    assert_eq!(&out[0].data[..], &data[..]);

    // Host input and output: staged up and down.
    let inputs = [tensor(
        "INPUT0",
        DataType::Fp32,
        vec![(len / 4) as i64],
        data.clone(),
    )];
    let out = run(
        instance.as_mut(),
        &inputs,
        &["OUTPUT0"],
        &Bindings::default(),
    )
    .unwrap();
    assert_eq!(&out[0].data[..], &data[..]);

    // An input on another GPU is refused with the reason.
    let elsewhere = DeviceBytes::new(7, input.ptr(), len, Arc::new(()));
    let bindings = Bindings {
        device_inputs: vec![("INPUT0".into(), elsewhere)],
        sinks: Vec::new(),
    };
    let inputs = [tensor(
        "INPUT0",
        DataType::Fp32,
        vec![(len / 4) as i64],
        Vec::new(),
    )];
    let e = run(instance.as_mut(), &inputs, &["OUTPUT0"], &bindings).unwrap_err();
    assert_eq!(
        e.message(),
        "input 'INPUT0' is in CUDA shared memory on GPU 7 but the instance runs on GPU 0"
    );
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_preprocess_cuda_matches_reference() {
    let mut instance = instance("preprocess_cuda");
    let Spec::Preprocess { params, .. } = parse_spec(&shipped("preprocess_cuda")).unwrap() else {
        panic!("preprocess spec");
    };
    for (h, w) in [(480, 640), (224, 224), (37, 53), (1, 1)] {
        let image = Image {
            height: h,
            width: w,
            channels: 3,
        };
        let src: Vec<u8> = (0..image.bytes()).map(|i| (i * 7 + i / 3) as u8).collect();
        let inputs = [tensor(
            "IMAGE",
            DataType::Uint8,
            vec![h as i64, w as i64, 3],
            src.clone(),
        )];
        let out = run(
            instance.as_mut(),
            &inputs,
            &["OUTPUT"],
            &Bindings::default(),
        )
        .unwrap();
        assert_eq!(out[0].shape, [3, 224, 224]);
        assert_eq!(out[0].datatype, DataType::Fp32);
        let got: &[f32] = bytemuck::cast_slice(&out[0].data);
        let want = reference::preprocess(&src, &image, &params);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() / w.abs().max(1.0) < 1e-5,
                "{h}x{w} element {i}: {g} vs {w}"
            );
        }
    }
    let empty = [tensor("IMAGE", DataType::Uint8, vec![0, 8, 3], Vec::new())];
    let e = run(instance.as_mut(), &empty, &["OUTPUT"], &Bindings::default()).unwrap_err();
    assert!(e.message().starts_with("input 'IMAGE': "), "{e}");
}
