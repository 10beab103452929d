//! Build script: compiles every `.proto` file under `proto/` with the
//! pure-Rust `protox` compiler (no `protoc` needed), generates prost code for
//! each package into `$OUT_DIR/<package>.rs`, and writes the encoded
//! descriptor set to `$OUT_DIR/file_descriptor_set.bin` for run-time
//! reflection (text format, JSON mapping, gRPC reflection).

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let protos = proto_files(Path::new("proto"))?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info carries the .proto comments into the generated docs;
    // imports keep the embedded set self-contained for the run-time pool.
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos)?;

    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // Generate code only for our own files; well-known imports such as
    // google/protobuf/*.proto map to prost-types through prost-build's
    // default extern paths.
    let mut fds = compiler.file_descriptor_set();
    let ours: Vec<String> = protos
        .iter()
        .map(|p| p.strip_prefix("proto").unwrap_or(p))
        .map(|p| {
            p.to_string_lossy()
                .trim_start_matches('/')
                .replace('\\', "/")
        })
        .collect();
    fds.file.retain(|f| {
        ours.iter()
            .any(|name| f.name.as_deref() == Some(name.as_str()))
    });

    prost_build::Config::new()
        .out_dir(&out_dir)
        // Tensor bytes decode as `Bytes` slices of the message buffer they
        // arrived in (no copy when the buffer is itself a `Bytes`), and
        // encode from the tensors' own `Bytes`.
        .bytes(BYTES_FIELDS)
        // Ordered maps in the gRPC messages: parameters are checked and
        // echoed in a fixed order, and encodings are reproducible.
        .btree_map(GRPC_MAP_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}

/// `bytes` fields generated as `bytes::Bytes` instead of `Vec<u8>`.
const BYTES_FIELDS: &[&str] = &[
    ".inference.ModelInferRequest.raw_input_contents",
    ".inference.ModelInferResponse.raw_output_contents",
    ".inference.InferTensorContents.bytes_contents",
];

/// Messages of `grpc_service.proto` whose `map` fields are `BTreeMap`s
/// (the model configuration keeps prost's default `HashMap`).
const GRPC_MAP_MESSAGES: &[&str] = &[
    ".inference.ModelInferRequest",
    ".inference.ModelInferResponse",
    ".inference.ModelStatistics",
    ".inference.RepositoryModelLoadRequest",
    ".inference.RepositoryModelUnloadRequest",
    ".inference.SystemSharedMemoryStatusResponse",
    ".inference.CudaSharedMemoryStatusResponse",
    ".inference.TraceSettingRequest",
    ".inference.TraceSettingResponse",
    ".inference.LogSettingsRequest",
    ".inference.LogSettingsResponse",
];

/// Every `.proto` file below `dir`, sorted so the output does not depend on
/// directory iteration order.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
