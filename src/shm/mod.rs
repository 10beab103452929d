//! Client shared memory: the registry of system (POSIX `shm_open` +
//! `mmap`) and CUDA (IPC handle) regions that requests name in their
//! `shared_memory_*` parameters.

#![allow(unsafe_code)]
