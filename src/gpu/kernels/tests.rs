//! Host-side tests run everywhere; GPU tests compare the kernels with
//! [`super::reference`]; they are `#[ignore]`d (scripts/gpu/run.sh runs them
//! with `--include-ignored`) and fail where there is no GPU.

use std::sync::Arc;

use half::f16;

use super::cache::ImageKind;
use super::*;

fn fake(device: i32, ptr: u64, len: usize) -> DeviceBytes {
    DeviceBytes::new(device, ptr, len, Arc::new(()))
}

fn arg<'a>(what: &'static str, bytes: &'a DeviceBytes, need: usize, align: u64) -> Arg<'a> {
    Arg {
        what,
        bytes,
        need,
        align,
    }
}

const IMAGENET: Preprocess = Preprocess {
    out_height: 224,
    out_width: 224,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    scale: 1.0 / 255.0,
    fp16: false,
};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

#[test]
fn every_kernel_is_defined_in_its_source() {
    for kernel in [
        Kernel::AddSubI32,
        Kernel::AddSubF32,
        Kernel::PreprocessF32,
        Kernel::PreprocessF16,
    ] {
        let source = kernel.family().source();
        let defined = source.contains(&format!("void {}(", kernel.name()))
            || source.contains(&format!("PREPROCESS_ENTRY({},", kernel.name()));
        assert!(
            defined,
            "{} missing from {}.cu",
            kernel.name(),
            kernel.family().stem()
        );
        assert!(!source.contains("#include"), "sources need no headers");
    }
    assert_eq!(Kernel::add_sub(DataType::Int32), Some(Kernel::AddSubI32));
    assert_eq!(Kernel::add_sub(DataType::Fp32), Some(Kernel::AddSubF32));
    assert_eq!(Kernel::add_sub(DataType::Int64), None);
    assert_eq!(Kernel::preprocess(true), Kernel::PreprocessF16);
}

#[test]
fn target_is_the_cubin_else_older_ptx() {
    let archs = [75, 80, 86, 89, 90, 100, 120];
    assert_eq!(
        select_target((9, 0), &archs).unwrap(),
        (ImageKind::Cubin, "sm_90".to_string())
    );
    assert_eq!(
        select_target((12, 1), &archs).unwrap(),
        (ImageKind::Ptx, "compute_120".to_string())
    );
    assert_eq!(
        select_target((8, 7), &archs).unwrap(),
        (ImageKind::Ptx, "compute_86".to_string())
    );
    let e = select_target((7, 0), &archs).unwrap_err();
    assert!(e.message().contains("sm_70"), "{e}");
    assert!(select_target((9, 0), &[]).is_err());
}

#[test]
fn launch_config_covers_any_length_with_capped_grids() {
    assert!(launch_config(0).is_none());
    let grid = |n| launch_config(n).unwrap().grid_dim.0;
    assert_eq!(grid(1), 1);
    assert_eq!(grid(255), 1);
    assert_eq!(grid(256), 1);
    assert_eq!(grid(257), 2);
    assert_eq!(grid(4 << 20), MAX_BLOCKS as u32);
    assert_eq!(grid(u64::MAX), MAX_BLOCKS as u32);
    let cfg = launch_config(1000).unwrap();
    assert_eq!(cfg.block_dim, (256, 1, 1));
    assert_eq!(
        (cfg.grid_dim.1, cfg.grid_dim.2, cfg.shared_mem_bytes),
        (1, 1, 0)
    );
}

#[test]
fn launch_arguments_are_checked() {
    let k = Kernel::AddSubI32;
    let a = fake(0, 0x1000, 64);
    let b = fake(0, 0x2000, 64);
    let s = fake(0, 0x3000, 64);
    let d = fake(0, 0x4000, 64);
    let ok =
        |outs: &[Arg<'_>]| check_args(k, 0, &[arg("in0", &a, 64, 4), arg("in1", &b, 64, 4)], outs);
    assert!(ok(&[arg("out_sum", &s, 64, 4), arg("out_diff", &d, 64, 4)]).is_ok());

    let other_gpu = fake(1, 0x3000, 64);
    let e = ok(&[arg("out_sum", &other_gpu, 64, 4)]).unwrap_err();
    assert_eq!(
        e.message(),
        "kernel 'add_sub_i32': out_sum is on GPU 1 but the stream runs on GPU 0"
    );
    let e = ok(&[arg("out_sum", &s, 65, 4)]).unwrap_err();
    assert_eq!(
        e.message(),
        "kernel 'add_sub_i32': out_sum holds 64 bytes, 65 needed"
    );
    let odd = fake(0, 0x3002, 64);
    let e = ok(&[arg("out_sum", &odd, 64, 4)]).unwrap_err();
    assert!(e.message().contains("not aligned to 4 bytes"), "{e}");

    // An output may not overlap an input or another output, even in part.
    let into_in1 = fake(0, 0x2000 + 60, 64);
    let e = ok(&[arg("out_sum", &into_in1, 64, 4)]).unwrap_err();
    assert_eq!(e.message(), "kernel 'add_sub_i32': out_sum overlaps in1");
    let e = ok(&[arg("out_sum", &s, 64, 4), arg("out_diff", &s, 64, 4)]).unwrap_err();
    assert_eq!(
        e.message(),
        "kernel 'add_sub_i32': out_sum overlaps out_diff"
    );
    // Adjacent ranges, ranges on other GPUs and empty ranges do not overlap;
    // inputs may share memory (they are only read).
    let adjacent = fake(0, 0x1000 + 64, 64);
    assert!(ok(&[arg("out_sum", &adjacent, 64, 4)]).is_ok());
    assert!(check_args(k, 0, &[arg("in0", &a, 64, 4), arg("in1", &a, 64, 4)], &[]).is_ok());
    assert!(ok(&[arg("out_sum", &a, 0, 4)]).is_ok());
    let far = fake(1, 0x1000, 64);
    assert!(!overlaps(&arg("x", &a, 64, 1), &arg("y", &far, 64, 1)));
}

#[test]
fn preprocess_parameters_are_validated() {
    let rgb = Image {
        height: 480,
        width: 640,
        channels: 3,
    };
    assert!(IMAGENET.validate(&rgb).is_ok());
    assert_eq!(IMAGENET.output_bytes(&rgb), 3 * 224 * 224 * 4);
    let half = Preprocess {
        fp16: true,
        ..IMAGENET
    };
    assert_eq!(half.output_bytes(&rgb), 3 * 224 * 224 * 2);
    let gray = Image { channels: 1, ..rgb };
    assert_eq!(IMAGENET.output_bytes(&gray), 224 * 224 * 4);
    // A 1-channel image ignores the other channels' settings.
    let only_first = Preprocess {
        std: [1.0, 0.0, f32::NAN],
        ..IMAGENET
    };
    assert!(only_first.validate(&gray).is_ok());
    assert!(
        only_first
            .validate(&rgb)
            .unwrap_err()
            .message()
            .contains("std[1]")
    );

    let rgba = Image { channels: 4, ..rgb };
    assert!(
        IMAGENET
            .validate(&rgba)
            .unwrap_err()
            .message()
            .contains("1 or 3 channels")
    );
    let empty = Image { height: 0, ..rgb };
    assert!(
        IMAGENET
            .validate(&empty)
            .unwrap_err()
            .message()
            .contains("non-empty image")
    );
    let no_output = Preprocess {
        out_width: 0,
        ..IMAGENET
    };
    assert!(no_output.validate(&rgb).is_err());
    let nan_mean = Preprocess {
        mean: [0.0, f32::NAN, 0.0],
        ..IMAGENET
    };
    assert!(
        nan_mean
            .validate(&rgb)
            .unwrap_err()
            .message()
            .contains("mean[1]")
    );
    let inf_scale = Preprocess {
        scale: f32::INFINITY,
        ..IMAGENET
    };
    assert!(inf_scale.validate(&rgb).is_err());
}

#[test]
fn reference_add_sub_wraps() {
    let (s, d) = reference::add_sub_i32(&[i32::MAX, 5, -3], &[1, 7, i32::MIN]);
    assert_eq!(s, [i32::MIN, 12, i32::MAX - 2]);
    assert_eq!(d, [i32::MAX - 1, -2, i32::MAX - 2]);
    let (s, d) = reference::add_sub_f32(&[1.5, -2.0], &[0.25, 4.0]);
    assert_eq!((s, d), (vec![1.75, 2.0], vec![1.25, -6.0]));
}

fn plain(out_height: u32, out_width: u32) -> Preprocess {
    Preprocess {
        out_height,
        out_width,
        mean: [0.0; 3],
        std: [1.0; 3],
        scale: 1.0,
        fp16: false,
    }
}

#[test]
fn reference_preprocess_known_values() {
    // Same size: a pure HWC -> CHW transpose.
    let image = Image {
        height: 2,
        width: 2,
        channels: 3,
    };
    let src: Vec<u8> = (0..12).collect();
    let out = reference::preprocess(&src, &image, &plain(2, 2));
    assert_eq!(out, [0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.]);

    // Halving samples the centre of each 2x2 block: its mean.
    let image = Image {
        height: 4,
        width: 4,
        channels: 1,
    };
    let src: Vec<u8> = (0..16).map(|i| i * 10).collect();
    let out = reference::preprocess(&src, &image, &plain(2, 2));
    assert_eq!(out, [25.0, 45.0, 105.0, 125.0]);

    // One pixel upsampled stays constant; normalization applies per channel.
    let image = Image {
        height: 1,
        width: 1,
        channels: 3,
    };
    let params = Preprocess {
        mean: [1.0, 2.0, 3.0],
        std: [2.0, 4.0, 0.5],
        scale: 0.5,
        ..plain(3, 5)
    };
    let out = reference::preprocess(&[10, 20, 30], &image, &params);
    assert_eq!(out.len(), 3 * 15);
    assert!(out[..15].iter().all(|&v| v == 2.0));
    assert!(out[15..30].iter().all(|&v| v == 2.0));
    assert!(out[30..].iter().all(|&v| v == 24.0));

    // Doubling 2 pixels wide: half-pixel centres give 1/4, 3/4 blends and
    // clamp at both edges.
    let image = Image {
        height: 1,
        width: 2,
        channels: 1,
    };
    let out = reference::preprocess(&[0, 100], &image, &plain(1, 4));
    assert_eq!(out, [0.0, 25.0, 75.0, 100.0]);

    // ImageNet normalization of a mid-grey pixel.
    let image = Image {
        height: 1,
        width: 1,
        channels: 3,
    };
    let out = reference::preprocess(&[128; 3], &image, &plain(1, 1));
    assert_eq!(out, [128.0; 3]);
    let out = reference::preprocess(
        &[128; 3],
        &image,
        &Preprocess {
            out_height: 1,
            out_width: 1,
            ..IMAGENET
        },
    );
    for (c, v) in out.iter().enumerate() {
        let want = (128.0 / 255.0 - IMAGENET.mean[c]) / IMAGENET.std[c];
        assert!((v - want).abs() < 1e-6, "{c}: {v} vs {want}");
    }
}

// ---------------------------------------------------------------------------
// GPU tests

/// GPU 0; panics without one (see [`crate::gpu::require_gpu`]).
fn gpu() -> i32 {
    crate::gpu::require_gpu();
    0
}

fn upload(stream: &Stream, device: i32, bytes: &[u8]) -> DeviceBytes {
    let buffer = crate::gpu::device_alloc(device, bytes.len().max(1))
        .unwrap()
        .into_bytes();
    stream.upload(bytes, &buffer).unwrap();
    buffer
}

fn alloc(device: i32, len: usize) -> DeviceBytes {
    crate::gpu::device_alloc(device, len.max(1))
        .unwrap()
        .into_bytes()
}

fn download(stream: &Stream, buffer: &DeviceBytes, len: usize) -> Vec<u8> {
    let mut host = crate::gpu::pinned(len.max(1)).unwrap();
    stream
        .download(&buffer.slice(0, len.max(1)).unwrap(), &mut host)
        .unwrap();
    stream.synchronize().unwrap();
    host[..len].to_vec()
}

/// Element counts around block and grid boundaries, up to 16 MiB of INT32.
const SIZES: &[usize] = &[1, 7, 255, 256, 257, 1000, 65_537, 1 << 20, 4 << 20];

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_add_sub_i32_matches_reference() {
    let device = gpu();
    let stream = Stream::new(device).unwrap();
    let mut rng = Rng(0x5eed);
    for &n in SIZES {
        let a = rng.bytes(n * 4);
        let b = rng.bytes(n * 4);
        let (da, db) = (upload(&stream, device, &a), upload(&stream, device, &b));
        let (ds, dd) = (alloc(device, n * 4), alloc(device, n * 4));
        add_sub_i32(&stream, &da, &db, &ds, &dd, n).unwrap();
        let sum = download(&stream, &ds, n * 4);
        let diff = download(&stream, &dd, n * 4);
        let (want_sum, want_diff) =
            reference::add_sub_i32(bytemuck::cast_slice(&a), bytemuck::cast_slice(&b));
        assert!(
            sum == bytemuck::cast_slice::<i32, u8>(&want_sum),
            "sum, n = {n}"
        );
        assert!(
            diff == bytemuck::cast_slice::<i32, u8>(&want_diff),
            "difference, n = {n}"
        );
    }
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let error = (g - w).abs() / w.abs().max(1.0);
        assert!(error < tolerance, "{what}: element {i}: got {g}, want {w}");
    }
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_add_sub_f32_matches_reference() {
    let device = gpu();
    let stream = Stream::new(device).unwrap();
    let mut rng = Rng(0xf32);
    for &n in SIZES {
        let a: Vec<f32> = (0..n)
            .map(|_| (rng.next() >> 40) as f32 / 1e3 - 8e3)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|_| (rng.next() >> 40) as f32 / 1e3 - 8e3)
            .collect();
        let da = upload(&stream, device, bytemuck::cast_slice(&a));
        let db = upload(&stream, device, bytemuck::cast_slice(&b));
        let (ds, dd) = (alloc(device, n * 4), alloc(device, n * 4));
        add_sub(&stream, DataType::Fp32, &da, &db, &ds, &dd, n).unwrap();
        let sum = download(&stream, &ds, n * 4);
        let diff = download(&stream, &dd, n * 4);
        let (want_sum, want_diff) = reference::add_sub_f32(&a, &b);
        assert_close(bytemuck::cast_slice(&sum), &want_sum, 1e-5, "sum");
        assert_close(bytemuck::cast_slice(&diff), &want_diff, 1e-5, "difference");
    }
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_launches_refuse_bad_buffers() {
    let device = gpu();
    let stream = Stream::new(device).unwrap();
    let small = alloc(device, 64);
    let big = alloc(device, 256);
    let other = alloc(device, 256);
    let e = add_sub_i32(&stream, &small, &big, &other, &alloc(device, 256), 64).unwrap_err();
    assert!(
        e.message().contains("in0 holds 64 bytes, 256 needed"),
        "{e}"
    );
    let e = add_sub(&stream, DataType::Int64, &big, &big, &other, &small, 8).unwrap_err();
    assert!(e.message().contains("INT32 or FP32"), "{e}");
    let e = add_sub_i32(&stream, &big, &big, &other, &other, 64).unwrap_err();
    assert!(e.message().contains("overlaps"), "{e}");
    let image = Image {
        height: 4,
        width: 4,
        channels: 4,
    };
    let e = preprocess(&stream, &big, &image, &other, &plain(2, 2)).unwrap_err();
    assert!(e.message().contains("1 or 3 channels"), "{e}");
    // Nothing was launched: the stream is still healthy.
    stream.synchronize().unwrap();
}

/// Runs the pre-processing kernel on a random image and compares with the
/// reference: FP32 within 1e-5 relative (to max(|x|, 1)), FP16 within one
/// half-precision rounding of the reference value.
fn check_preprocess(stream: &Stream, device: i32, image: Image, params: Preprocess, seed: u64) {
    let src = Rng(seed).bytes(image.bytes());
    let dsrc = upload(stream, device, &src);
    let out_len = params.output_bytes(&image);
    let ddst = alloc(device, out_len);
    preprocess(stream, &dsrc, &image, &ddst, &params).unwrap();
    let got = download(stream, &ddst, out_len);
    let want = reference::preprocess(&src, &image, &params);
    let what = format!(
        "{image:?} -> {}x{} fp16={}",
        params.out_height, params.out_width, params.fp16
    );
    if params.fp16 {
        let got: Vec<f32> = bytemuck::cast_slice::<u8, f16>(&got)
            .iter()
            .map(|h| h.to_f32())
            .collect();
        // Half precision: 11 significant bits.
        assert_close(&got, &want, 1.0 / 1024.0, &what);
    } else {
        assert_close(bytemuck::cast_slice(&got), &want, 1e-5, &what);
    }
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_preprocess_matches_reference() {
    let device = gpu();
    let stream = Stream::new(device).unwrap();
    let shapes = [
        (480, 640, 3),
        (224, 224, 3),
        (448, 448, 3),
        (37, 53, 3),
        (1, 1, 3),
        (300, 7, 1),
        (1080, 1920, 3),
        // 16 MiB of pixels.
        (2048, 2731, 3),
    ];
    for (i, &(height, width, channels)) in shapes.iter().enumerate() {
        let image = Image {
            height,
            width,
            channels,
        };
        for fp16 in [false, true] {
            check_preprocess(
                &stream,
                device,
                image,
                Preprocess { fp16, ..IMAGENET },
                i as u64 + 1,
            );
        }
    }
    // Output sizes off the block size, and upsampling.
    let image = Image {
        height: 97,
        width: 61,
        channels: 3,
    };
    for (h, w) in [(1, 1), (17, 300), (513, 129)] {
        let params = Preprocess {
            out_height: h,
            out_width: w,
            ..IMAGENET
        };
        check_preprocess(&stream, device, image, params, u64::from(h * w));
    }
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_disk_cache_is_written_reused_and_repaired() {
    let device = gpu();
    let ctx = crate::gpu::context(device).unwrap();
    let dir = std::env::temp_dir().join(format!("nereid-kernel-cache-gpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = DiskCache::new(dir.clone());
    build_module(&ctx, Family::Elementwise, Some(&disk)).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let written = std::fs::read(entry).unwrap();
    // A second build takes the entry as is.
    let module = build_module(&ctx, Family::Elementwise, Some(&disk)).unwrap();
    module.load_function(Kernel::AddSubI32.name()).unwrap();
    assert_eq!(std::fs::read(entry).unwrap(), written);
    // A corrupt entry is recompiled and rewritten, not fatal.
    std::fs::write(entry, &written[..written.len() / 2]).unwrap();
    let module = build_module(&ctx, Family::Elementwise, Some(&disk)).unwrap();
    module.load_function(Kernel::AddSubF32.name()).unwrap();
    assert_eq!(std::fs::read(entry).unwrap(), written);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs a CUDA driver: scripts/gpu/run.sh runs it"]
fn gpu_ptx_fallback_loads() {
    let device = gpu();
    let ctx = crate::gpu::context(device).unwrap();
    let dir = std::env::temp_dir().join(format!("nereid-kernel-cache-ptx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = DiskCache::new(dir.clone());
    // compute_75 PTX runs on every GPU NVRTC 13 knows, JIT-compiled by the
    // driver: the path a GPU newer than the installed NVRTC takes.
    for family in [Family::Elementwise, Family::Preprocess] {
        for _ in 0..2 {
            let module =
                build_module_for(&ctx, family, Some(&disk), ImageKind::Ptx, "compute_75").unwrap();
            for kernel in [
                Kernel::AddSubI32,
                Kernel::AddSubF32,
                Kernel::PreprocessF32,
                Kernel::PreprocessF16,
            ] {
                if kernel.family() == family {
                    module.load_function(kernel.name()).unwrap();
                }
            }
        }
    }
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 2, "one PTX entry per family");
    std::fs::remove_dir_all(&dir).unwrap();
}
