//! nereid: an inference server speaking Triton's protocols.
//!
//! Layers, top to bottom (each calls only those below it): `net` (mio event
//! loops and sockets), `protocol` (sans-IO HTTP/1.1, HTTP/2, gRPC and the
//! KServe v2 codec and REST routes), `server` (the handle front ends call),
//! `repository` (model repository and lifecycle), `scheduler` (instance
//! threads, batchers, ensembles), `backend` (model implementations), `core`
//! (shared types). `metrics` serves Prometheus metrics from the server's
//! statistics, beside the protocols. `gpu` (CUDA, loaded at run time) and
//! `shm` (client shared memory) are the only modules with unsafe code.

pub mod backend;
pub mod cli;
pub mod core;
#[cfg(fuzzing)]
pub mod fuzz_api;
pub mod gpu;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod repository;
pub mod scheduler;
pub mod server;
pub mod shm;
