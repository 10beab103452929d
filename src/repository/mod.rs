//! The model repository: finding models and their versions on disk,
//! reading and completing their configurations, and the lifecycle of every
//! model version (load, reload, unload) under the control modes `none`,
//! `poll` and `explicit`: change detection for polling ([`watch`]) and
//! model warmup ([`warmup`]), and model directories written from a load
//! request's `file:` parameters ([`overrides`]).
//!
//! It calls down into `backend` (to resolve and auto-complete a
//! configuration) and `scheduler` (one [`crate::scheduler::ModelScheduler`]
//! per ready version, or an [`crate::scheduler::ensemble::EnsembleScheduler`]
//! for an ensemble); the server layer above calls [`ModelManager`].

pub mod config;
pub mod manager;
pub mod overrides;
pub mod versions;
pub mod warmup;
pub mod watch;

pub use config::{ConfigSource, config_to_json, parse_config_json, parse_config_text};
pub use manager::{ControlMode, IndexEntry, LoadedModel, ManagerOptions, ModelManager, ModelState};
