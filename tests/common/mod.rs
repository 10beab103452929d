//! What the in-process integration tests share: the example repository
//! and starting its models with a failure that says what did not load.

use std::path::PathBuf;

use nereid::server::Server;

/// The example model repository.
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("model_repository")
}

/// Starts `server`'s models; on failure panics naming each model that did
/// not load and why (the example repository's ONNX models need
/// scripts/fetch-onnxruntime.sh and scripts/fetch-ocr-models.sh first).
pub fn start_models(server: &Server) {
    if let Err(e) = server.start() {
        let failed: Vec<String> = server
            .repository_index(false)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.state != "READY")
            .map(|m| format!("{}: {} {}", m.name, m.state, m.reason))
            .collect();
        panic!(
            "{}: {failed:#?}\nthe example repository's ONNX models need scripts/fetch-onnxruntime.sh and scripts/fetch-ocr-models.sh run first (scripts/test.sh runs both)",
            e.message()
        );
    }
}
