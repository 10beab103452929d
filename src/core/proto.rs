//! Generated protobuf types (prost) for the `proto/` files (the model
//! configuration, the KServe v2 gRPC service and gRPC health), and the
//! run-time descriptor pool built from the same files, which the text-format
//! (`config.pbtxt`) and protobuf-JSON paths use for reflection.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// Package `inference`: the model configuration and the KServe v2 gRPC
/// service messages (`grpc_service.proto`).
// Generated code: its docs come from the .proto comments, which do not cover
// every item, and its shapes (large enums, many arguments) are prost's, not
// ours to restyle.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// Package `grpc.health.v1`: the standard gRPC health checking messages.
pub mod grpc {
    /// `grpc.health.*`.
    pub mod health {
        /// `grpc.health.v1`.
        // Generated code, as for `inference` above.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
}

pub use inference::{
    ModelConfig, ModelDynamicBatching, ModelEnsembling, ModelInput, ModelInstanceGroup,
    ModelOutput, ModelParameter, ModelQueuePolicy, ModelSequenceBatching, ModelTensorReshape,
    ModelVersionPolicy,
};

/// The encoded `FileDescriptorSet` of every file in `proto/`, with imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// Fully qualified protobuf name of [`ModelConfig`].
pub const MODEL_CONFIG_MESSAGE: &str = "inference.ModelConfig";

/// The descriptor pool of every file in `proto/`, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes were produced by the build script from the same files the
        // generated code comes from, so a decode failure is a build defect.
        DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("embedded file descriptor set produced by build.rs is valid")
    })
}

/// The reflection descriptor of [`ModelConfig`].
pub fn model_config_descriptor() -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(MODEL_CONFIG_MESSAGE)
        .expect("inference.ModelConfig is compiled into the descriptor pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_knows_model_config_fields() {
        let desc = model_config_descriptor();
        let numbers: Vec<(String, u32)> = ["name", "backend", "max_batch_size", "model_metrics"]
            .iter()
            .map(|n| {
                let f = desc.get_field_by_name(n).expect("field exists");
                (f.name().to_owned(), f.number())
            })
            .collect();
        assert_eq!(
            numbers,
            vec![
                ("name".to_owned(), 1),
                ("backend".to_owned(), 17),
                ("max_batch_size".to_owned(), 4),
                ("model_metrics".to_owned(), 26),
            ]
        );
        let dt = descriptor_pool()
            .get_enum_by_name("inference.DataType")
            .expect("enum exists");
        assert_eq!(
            dt.get_value_by_name("TYPE_BF16").map(|v| v.number()),
            Some(14)
        );
        assert_eq!(
            dt.get_value_by_name("TYPE_STRING").map(|v| v.number()),
            Some(13)
        );
    }
}
