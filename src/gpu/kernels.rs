//! nereid's own CUDA kernels (the `.cu` files under `kernels/`), compiled at
//! run time by NVRTC for the GPU at hand and launched through safe functions.
//!
//! Compilation targets the device's own architecture: a cubin (`sm_XY`) when
//! the installed NVRTC knows it, else PTX for the newest virtual
//! architecture NVRTC has at or below it (`compute_XY`), which the driver
//! JIT-compiles at load. Compiled images are cached on disk (`cache`:
//! keyed by source, options, NVRTC version and target) and,
//! once loaded, per device and kernel in memory, so each process compiles a
//! kernel family at most once per GPU and usually never.
//!
//! Every launch function checks what the kernel will touch before the
//! launch: each buffer is on the stream's GPU, large enough and aligned for
//! its element type, and no output overlaps another buffer. Kernels run
//! asynchronously on the stream, which keeps a clone of every buffer a
//! launch uses ([`Stream::keep`]) until it is synchronized, so callers may
//! drop theirs at once.
//!
//! Compilation errors carry NVRTC's log; launch errors name the kernel.
//! [`reference`] holds CPU implementations of the same arithmetic, for
//! tests. May call `gpu`'s context and stream layer and cudarc; nothing
//! above `gpu/`.

pub(crate) mod cache;
pub mod reference;

use std::collections::HashMap;
use std::ffi::{CString, c_int};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{Ptx, result as nvrtc_result, sys as nvrtc_sys};

use self::cache::{Compiled, DiskCache, ImageKind, Key};
use super::Stream;
use crate::core::{DataType, DeviceBytes, Error, Result};

/// A source file under `kernels/`, compiled as one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Elementwise,
    Preprocess,
}

impl Family {
    fn stem(self) -> &'static str {
        match self {
            Family::Elementwise => "elementwise",
            Family::Preprocess => "preprocess",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Family::Elementwise => include_str!("../../kernels/elementwise.cu"),
            Family::Preprocess => include_str!("../../kernels/preprocess.cu"),
        }
    }
}

/// A kernel entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// INT32 sum and difference (wrapping).
    AddSubI32,
    /// FP32 sum and difference.
    AddSubF32,
    /// Image pre-processing to FP32.
    PreprocessF32,
    /// Image pre-processing to FP16.
    PreprocessF16,
}

impl Kernel {
    /// The `extern "C"` name of the entry point.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::AddSubI32 => "add_sub_i32",
            Kernel::AddSubF32 => "add_sub_f32",
            Kernel::PreprocessF32 => "preprocess_f32",
            Kernel::PreprocessF16 => "preprocess_f16",
        }
    }

    fn family(self) -> Family {
        match self {
            Kernel::AddSubI32 | Kernel::AddSubF32 => Family::Elementwise,
            Kernel::PreprocessF32 | Kernel::PreprocessF16 => Family::Preprocess,
        }
    }

    /// The `add_sub` kernel for `datatype`, if there is one.
    pub fn add_sub(datatype: DataType) -> Option<Kernel> {
        match datatype {
            DataType::Int32 => Some(Kernel::AddSubI32),
            DataType::Fp32 => Some(Kernel::AddSubF32),
            _ => None,
        }
    }

    /// The pre-processing kernel writing FP16 (`true`) or FP32.
    pub fn preprocess(fp16: bool) -> Kernel {
        if fp16 {
            Kernel::PreprocessF16
        } else {
            Kernel::PreprocessF32
        }
    }
}

/// Options every compilation gets besides the target. `--fmad=false` keeps
/// `a * b + c` two rounded operations, as in the CPU references, so results
/// can be compared exactly; these kernels are bound by memory, not FLOPs.
const BASE_OPTIONS: &[&str] = &["--fmad=false"];

// ---------------------------------------------------------------------------
// NVRTC

/// Whether the NVRTC library can be loaded (checked once; without this,
/// cudarc panics on the first NVRTC call).
fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: is_culib_present only tries to dlopen the candidate library
    // names and drops what it opened; it touches no other state.
    *PRESENT.get_or_init(|| unsafe { nvrtc_sys::is_culib_present() })
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(Error::unavailable(
            "the NVRTC library (libnvrtc.so) is not installed or not on the library path; \
             nereid's CUDA kernels are compiled with it at run time",
        ))
    }
}

fn nvrtc_error(what: &str, e: nvrtc_result::NvrtcError) -> Error {
    Error::internal(format!("NVRTC: {what} failed: {:?}", e.0))
}

/// `(major, minor)` of the loaded NVRTC.
fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present (checked above) and both pointers are
    // to live locals nvrtcVersion writes one int each to.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| nvrtc_error("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// The real architectures (`XY` of `sm_XY`) the loaded NVRTC compiles for.
fn nvrtc_archs() -> Result<Vec<i32>> {
    require_nvrtc()?;
    let mut n: c_int = 0;
    // SAFETY: the library is present and `n` is a live local.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| nvrtc_error("nvrtcGetNumSupportedArchs", e))?;
    let mut archs: Vec<c_int> = vec![0; usize::try_from(n).unwrap_or(0)];
    if archs.is_empty() {
        return Ok(Vec::new());
    }
    // SAFETY: `archs` has room for the `n` ints NVRTC just said it writes.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| nvrtc_error("nvrtcGetSupportedArchs", e))?;
    Ok(archs)
}

/// What to compile for a GPU of compute capability `cc`, given the
/// architectures NVRTC supports: the cubin for the GPU's own architecture,
/// else PTX for the newest older one (forward-compatible through the
/// driver's JIT).
fn select_target(cc: (i32, i32), supported: &[i32]) -> Result<(ImageKind, String)> {
    let arch = cc.0 * 10 + cc.1;
    if supported.contains(&arch) {
        return Ok((ImageKind::Cubin, format!("sm_{arch}")));
    }
    match supported.iter().copied().filter(|&a| a <= arch).max() {
        Some(older) => Ok((ImageKind::Ptx, format!("compute_{older}"))),
        None => Err(Error::unavailable(format!(
            "the installed NVRTC compiles for architectures {supported:?}, none of them at or \
             below the GPU's sm_{arch}; install an NVRTC that supports compute capability {}.{}",
            cc.0, cc.1
        ))),
    }
}

/// An NVRTC program, destroyed on drop; owns the source text NVRTC may
/// keep pointers into.
struct Program {
    raw: nvrtc_sys::nvrtcProgram,
    _source: CString,
    _name: CString,
}

impl Program {
    fn new(source: &str, name: &str) -> Result<Program> {
        let source = CString::new(source)
            .map_err(|_| Error::internal(format!("kernel source {name} holds a NUL byte")))?;
        let name_c = CString::new(name)
            .map_err(|_| Error::internal(format!("kernel name {name:?} holds a NUL byte")))?;
        let raw = nvrtc_result::create_program(&source, Some(&name_c))
            .map_err(|e| nvrtc_error("nvrtcCreateProgram", e))?;
        Ok(Program {
            raw,
            _source: source,
            _name: name_c,
        })
    }

    fn log(&self) -> String {
        // SAFETY: `raw` is a live program (created in `new`, destroyed only
        // in Drop).
        match unsafe { nvrtc_result::get_program_log(self.raw) } {
            Ok(log) => {
                let bytes: Vec<u8> = log
                    .iter()
                    .map(|&c| c as u8)
                    .take_while(|&b| b != 0)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(e) => format!("(no log: {:?})", e.0),
        }
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: `raw` is a live, compiled program; `size` is a live local.
        unsafe { nvrtc_sys::nvrtcGetCUBINSize(self.raw, &mut size) }
            .result()
            .map_err(|e| nvrtc_error("nvrtcGetCUBINSize", e))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has the `size` bytes NVRTC just said it writes.
        unsafe { nvrtc_sys::nvrtcGetCUBIN(self.raw, cubin.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| nvrtc_error("nvrtcGetCUBIN", e))?;
        Ok(cubin)
    }

    fn ptx(&self) -> Result<Vec<u8>> {
        // SAFETY: `raw` is a live, compiled program.
        let ptx = unsafe { nvrtc_result::get_ptx(self.raw) }
            .map_err(|e| nvrtc_error("nvrtcGetPTX", e))?;
        Ok(ptx
            .iter()
            .map(|&c| c as u8)
            .take_while(|&b| b != 0)
            .collect())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `raw` came from nvrtcCreateProgram and is destroyed only
        // here, once. A failure leaks the program, which is all it can do.
        if let Err(e) = unsafe { nvrtc_result::destroy_program(self.raw) } {
            log::warn!("NVRTC: nvrtcDestroyProgram failed: {:?}", e.0);
        }
    }
}

/// Compiles `family` with `options` (target included) into `kind`.
fn compile(family: Family, options: &[String], kind: ImageKind, target: &str) -> Result<Compiled> {
    let file = format!("{}.cu", family.stem());
    let program = Program::new(family.source(), &file)?;
    // SAFETY: `program.raw` is live; options are plain strings.
    if let Err(e) = unsafe { nvrtc_result::compile_program(program.raw, options) } {
        return Err(Error::internal(format!(
            "NVRTC could not compile kernels/{file} for {target} ({:?}, options {options:?}):\n{}",
            e.0,
            program.log()
        )));
    }
    let bytes = match kind {
        ImageKind::Cubin => program.cubin()?,
        ImageKind::Ptx => program.ptx()?,
    };
    Ok(Compiled { kind, bytes })
}

/// Hands a compiled image to the driver.
fn load_image(ctx: &Arc<CudaContext>, compiled: &Compiled) -> Result<Arc<CudaModule>> {
    let image = match compiled.kind {
        ImageKind::Cubin => Ptx::from_binary(compiled.bytes.clone()),
        ImageKind::Ptx => {
            // cudarc turns PTX text into a C string and panics on a NUL.
            let text = String::from_utf8(compiled.bytes.clone())
                .ok()
                .filter(|t| !t.contains('\0'))
                .ok_or_else(|| Error::internal("PTX image is not NUL-free text"))?;
            Ptx::from_src(text)
        }
    };
    ctx.load_module(image)
        .map_err(|e| Error::internal(format!("the driver refused the image: {e:?}")))
}

/// Compiles (or takes from `disk`) and loads `family` on `ctx`'s GPU.
fn build_module(
    ctx: &Arc<CudaContext>,
    family: Family,
    disk: Option<&DiskCache>,
) -> Result<Arc<CudaModule>> {
    let cc = ctx.compute_capability().map_err(|e| {
        Error::internal(format!("GPU {}: compute capability: {e:?}", ctx.ordinal()))
    })?;
    let (kind, target) = select_target(cc, &nvrtc_archs()?)?;
    build_module_for(ctx, family, disk, kind, &target)
}

/// [`build_module`] for a chosen target.
fn build_module_for(
    ctx: &Arc<CudaContext>,
    family: Family,
    disk: Option<&DiskCache>,
    kind: ImageKind,
    target: &str,
) -> Result<Arc<CudaModule>> {
    let device = ctx.ordinal();
    let version = nvrtc_version()?;
    let mut options: Vec<String> = BASE_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture={target}"));
    let key = Key::new(family.stem(), family.source(), &options, version, target);

    if let Some(cached) = disk.and_then(|d| d.load(&key)).filter(|c| c.kind == kind) {
        match load_image(ctx, &cached) {
            Ok(module) => return Ok(module),
            Err(e) => log::warn!(
                "kernel cache: {} not loadable on GPU {device} ({e}); recompiling",
                disk.map(|d| d.path(&key).display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
    let compiled = compile(family, &options, kind, target)?;
    let module = load_image(ctx, &compiled).map_err(|e| {
        Error::internal(format!(
            "loading kernels/{}.cu ({target}) on GPU {device}: {e}",
            family.stem()
        ))
    })?;
    if let Some(disk) = disk
        && let Err(e) = disk.store(&key, &compiled)
    {
        log::warn!(
            "kernel cache: cannot write {}: {e}",
            disk.path(&key).display()
        );
    }
    log::info!(
        "compiled kernels/{}.cu for {target} on GPU {device} (NVRTC {}.{})",
        family.stem(),
        version.0,
        version.1
    );
    Ok(module)
}

/// Loaded modules and functions of this process.
#[derive(Default)]
struct Loaded {
    modules: HashMap<(usize, Family), Arc<CudaModule>>,
    functions: HashMap<(usize, Kernel), CudaFunction>,
}

/// One lock for both maps; a first use compiles under it, which serializes
/// compilations (each happens once per process and GPU at most).
static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(Mutex::default);

fn function(ctx: &Arc<CudaContext>, kernel: Kernel) -> Result<CudaFunction> {
    let device = ctx.ordinal();
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = loaded.functions.get(&(device, kernel)) {
        return Ok(f.clone());
    }
    let family = kernel.family();
    let module = match loaded.modules.get(&(device, family)) {
        Some(m) => Arc::clone(m),
        None => {
            let disk = cache::default_dir().map(DiskCache::new);
            let m = build_module(ctx, family, disk.as_ref())?;
            loaded.modules.insert((device, family), Arc::clone(&m));
            m
        }
    };
    let f = module.load_function(kernel.name()).map_err(|e| {
        Error::internal(format!(
            "kernel '{}' not found in kernels/{}.cu on GPU {device}: {e:?}",
            kernel.name(),
            family.stem()
        ))
    })?;
    loaded.functions.insert((device, kernel), f.clone());
    Ok(f)
}

/// Compiles (or loads from the disk cache) `kernels` for `device` now, so
/// the first request does not pay for it and a failure surfaces at model
/// load.
pub fn prepare(device: i32, kernels: &[Kernel]) -> Result<()> {
    let ctx = super::context(device)?;
    for &kernel in kernels {
        function(&ctx, kernel)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Launch configuration and argument checks

/// Threads per block of every kernel here.
const BLOCK_THREADS: u32 = 256;
/// Grid cap: a few waves on the largest GPUs; the grid-stride loops cover
/// any length beyond.
const MAX_BLOCKS: u64 = 4096;

/// The 1-D grid for `n` work items, `None` when there is nothing to do.
fn launch_config(n: u64) -> Option<LaunchConfig> {
    if n == 0 {
        return None;
    }
    let blocks = n.div_ceil(u64::from(BLOCK_THREADS)).min(MAX_BLOCKS);
    Some(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// One buffer a kernel touches: the first `need` bytes of `bytes`, aligned
/// to `align`.
struct Arg<'a> {
    what: &'static str,
    bytes: &'a DeviceBytes,
    need: usize,
    align: u64,
}

fn overlaps(a: &Arg<'_>, b: &Arg<'_>) -> bool {
    let (a0, b0) = (a.bytes.ptr(), b.bytes.ptr());
    let (a1, b1) = (a0 + a.need as u64, b0 + b.need as u64);
    a.need > 0 && b.need > 0 && a.bytes.device() == b.bytes.device() && a0 < b1 && b0 < a1
}

/// Checks every buffer of a launch on `device`: on that GPU, long enough,
/// aligned, and no output overlapping any other buffer.
fn check_args(kernel: Kernel, device: i32, inputs: &[Arg<'_>], outputs: &[Arg<'_>]) -> Result<()> {
    let name = kernel.name();
    for arg in inputs.iter().chain(outputs) {
        if arg.bytes.device() != device {
            return Err(Error::invalid_arg(format!(
                "kernel '{name}': {} is on GPU {} but the stream runs on GPU {device}",
                arg.what,
                arg.bytes.device()
            )));
        }
        if arg.bytes.len() < arg.need {
            return Err(Error::invalid_arg(format!(
                "kernel '{name}': {} holds {} bytes, {} needed",
                arg.what,
                arg.bytes.len(),
                arg.need
            )));
        }
        if arg.bytes.ptr() % arg.align != 0 {
            return Err(Error::invalid_arg(format!(
                "kernel '{name}': {} at {:#x} is not aligned to {} bytes",
                arg.what,
                arg.bytes.ptr(),
                arg.align
            )));
        }
    }
    for (i, out) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(outputs.iter().skip(i + 1));
        if let Some(other) = others.into_iter().find(|o| overlaps(out, o)) {
            return Err(Error::invalid_arg(format!(
                "kernel '{name}': {} overlaps {}",
                out.what, other.what
            )));
        }
    }
    Ok(())
}

fn launch_error(kernel: Kernel, device: i32, e: cudarc::driver::DriverError) -> Error {
    Error::internal(format!(
        "launching kernel '{}' on GPU {device}: {e:?}",
        kernel.name()
    ))
}

fn stream_device(stream: &Stream) -> (&Arc<CudaContext>, i32) {
    (stream.cuda().context(), stream.device())
}

/// Hands every buffer of a launch to the stream to keep until synchronized.
fn keep_all(stream: &Stream, buffers: &[&DeviceBytes]) {
    for bytes in buffers {
        stream.keep(bytes);
    }
}

// ---------------------------------------------------------------------------
// Launches

/// `out_sum = in0 + in1` and `out_diff = in0 - in1` over `n` elements of
/// `datatype` (INT32, wrapping, or FP32), enqueued on `stream`.
pub fn add_sub(
    stream: &Stream,
    datatype: DataType,
    in0: &DeviceBytes,
    in1: &DeviceBytes,
    out_sum: &DeviceBytes,
    out_diff: &DeviceBytes,
    n: usize,
) -> Result<()> {
    let kernel = Kernel::add_sub(datatype).ok_or_else(|| {
        Error::unsupported(format!(
            "the add_sub kernel takes INT32 or FP32, not {}",
            datatype.wire_name()
        ))
    })?;
    let need = n.checked_mul(4).ok_or_else(|| {
        Error::invalid_arg(format!("kernel '{}': {n} elements overflow", kernel.name()))
    })?;
    let arg = |what, bytes| Arg {
        what,
        bytes,
        need,
        align: 4,
    };
    let (ctx, device) = stream_device(stream);
    check_args(
        kernel,
        device,
        &[arg("in0", in0), arg("in1", in1)],
        &[arg("out_sum", out_sum), arg("out_diff", out_diff)],
    )?;
    let Some(cfg) = launch_config(n as u64) else {
        return Ok(());
    };
    let func = function(ctx, kernel)?;
    let (a, b, s, d, len) = (
        in0.ptr(),
        in1.ptr(),
        out_sum.ptr(),
        out_diff.ptr(),
        n as u64,
    );
    let mut launch = stream.cuda().launch_builder(&func);
    launch.arg(&a).arg(&b).arg(&s).arg(&d).arg(&len);
    // SAFETY: the kernel's parameters are (const T*, const T*, T*, T*,
    // unsigned long long) with T a 4-byte type: four device addresses
    // (CUdeviceptr is u64) and a u64, pushed in that order. check_args
    // proved each buffer is on this stream's GPU, holds the n elements the
    // kernel reads or writes, is 4-byte aligned, and that the outputs
    // overlap nothing (the kernel's __restrict__ promise). The stream keeps
    // the buffers alive until it is synchronized (keep_all, right after).
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(kernel, device, e))?;
    keep_all(stream, &[in0, in1, out_sum, out_diff]);
    Ok(())
}

/// [`add_sub`] over INT32 elements, the `simple` model's computation.
pub fn add_sub_i32(
    stream: &Stream,
    in0: &DeviceBytes,
    in1: &DeviceBytes,
    out_sum: &DeviceBytes,
    out_diff: &DeviceBytes,
    n: usize,
) -> Result<()> {
    add_sub(stream, DataType::Int32, in0, in1, out_sum, out_diff, n)
}

/// The shape of a UINT8 HWC image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Interleaved channels: 1 or 3.
    pub channels: u32,
}

impl Image {
    /// Bytes of the image (`height * width * channels`).
    pub fn bytes(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }
}

/// What the pre-processing kernel does to an image: resize to
/// `out_height` x `out_width` (bilinear, half-pixel centres), normalize
/// each channel `c` to `(x * scale - mean[c]) / std[c]`, lay out CHW, and
/// write FP32 or FP16. A 1-channel image uses `mean[0]` and `std[0]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Output rows.
    pub out_height: u32,
    /// Output columns.
    pub out_width: u32,
    /// Per-channel mean, subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divided by last.
    pub std: [f32; 3],
    /// Factor applied to the raw 0..=255 values first (1/255 maps to 0..=1).
    pub scale: f32,
    /// FP16 output instead of FP32.
    pub fp16: bool,
}

/// Values derived once on the host and passed to the kernel, so the GPU and
/// [`reference::preprocess`] compute with the same numbers.
pub(crate) struct PreprocessArgs {
    pub(crate) scale_y: f32,
    pub(crate) scale_x: f32,
    pub(crate) inv_std: [f32; 3],
}

impl Preprocess {
    /// Checks the parameters against an input image.
    pub fn validate(&self, image: &Image) -> Result<()> {
        if image.channels != 1 && image.channels != 3 {
            return Err(Error::invalid_arg(format!(
                "pre-processing takes images of 1 or 3 channels, got {}",
                image.channels
            )));
        }
        if image.height == 0 || image.width == 0 {
            return Err(Error::invalid_arg(format!(
                "pre-processing needs a non-empty image, got {}x{}",
                image.height, image.width
            )));
        }
        if self.out_height == 0 || self.out_width == 0 {
            return Err(Error::invalid_arg(format!(
                "pre-processing output must be non-empty, got {}x{}",
                self.out_height, self.out_width
            )));
        }
        let used = image.channels as usize;
        if let Some(c) = (0..used).find(|&c| !(self.std[c].is_finite() && self.std[c] != 0.0)) {
            return Err(Error::invalid_arg(format!(
                "pre-processing std[{c}] must be finite and non-zero, got {}",
                self.std[c]
            )));
        }
        if let Some(c) = (0..used).find(|&c| !self.mean[c].is_finite()) {
            return Err(Error::invalid_arg(format!(
                "pre-processing mean[{c}] must be finite, got {}",
                self.mean[c]
            )));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid_arg(format!(
                "pre-processing scale must be finite, got {}",
                self.scale
            )));
        }
        Ok(())
    }

    /// Bytes of the output for `image`: `channels * out_height * out_width`
    /// elements of 2 (FP16) or 4 (FP32) bytes.
    pub fn output_bytes(&self, image: &Image) -> usize {
        let element = if self.fp16 { 2 } else { 4 };
        image.channels as usize * self.out_height as usize * self.out_width as usize * element
    }

    pub(crate) fn kernel_args(&self, image: &Image) -> PreprocessArgs {
        PreprocessArgs {
            scale_y: image.height as f32 / self.out_height as f32,
            scale_x: image.width as f32 / self.out_width as f32,
            inv_std: self.std.map(|s| 1.0 / s),
        }
    }
}

/// Pre-processes the UINT8 HWC image in `src` (shape `image`) into `dst`
/// as described by `params` ([`Preprocess`]), enqueued on `stream`.
pub fn preprocess(
    stream: &Stream,
    src: &DeviceBytes,
    image: &Image,
    dst: &DeviceBytes,
    params: &Preprocess,
) -> Result<()> {
    let kernel = Kernel::preprocess(params.fp16);
    params.validate(image)?;
    let (ctx, device) = stream_device(stream);
    check_args(
        kernel,
        device,
        &[Arg {
            what: "the source image",
            bytes: src,
            need: image.bytes(),
            align: 1,
        }],
        &[Arg {
            what: "the output tensor",
            bytes: dst,
            need: params.output_bytes(image),
            align: if params.fp16 { 2 } else { 4 },
        }],
    )?;
    let pixels = u64::from(params.out_height) * u64::from(params.out_width);
    let Some(cfg) = launch_config(pixels) else {
        return Ok(());
    };
    let func = function(ctx, kernel)?;
    let args = params.kernel_args(image);
    let (src_ptr, dst_ptr) = (src.ptr(), dst.ptr());
    let [m0, m1, m2] = params.mean;
    let [s0, s1, s2] = args.inv_std;
    let mut launch = stream.cuda().launch_builder(&func);
    launch
        .arg(&src_ptr)
        .arg(&image.height)
        .arg(&image.width)
        .arg(&image.channels)
        .arg(&dst_ptr)
        .arg(&params.out_height)
        .arg(&params.out_width)
        .arg(&args.scale_y)
        .arg(&args.scale_x)
        .arg(&params.scale)
        .arg(&m0)
        .arg(&m1)
        .arg(&m2)
        .arg(&s0)
        .arg(&s1)
        .arg(&s2);
    // SAFETY: the arguments match preprocess_f32/_f16's parameter list in
    // order and type: (const u8*, u32 in_h, u32 in_w, u32 channels, T* dst,
    // u32 out_h, u32 out_w, then nine f32), device addresses as u64.
    // validate() proved channels is 1 or 3 and every dimension non-zero;
    // check_args proved both buffers are on this stream's GPU, `src` holds
    // the h*w*c bytes the kernel may read (its indices are clamped to the
    // image), `dst` holds the c*out_h*out_w elements it writes, aligned for
    // them, and does not overlap `src`. The stream keeps both alive until
    // it is synchronized (keep_all, right after).
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(kernel, device, e))?;
    keep_all(stream, &[src, dst]);
    Ok(())
}

#[cfg(test)]
mod tests;
