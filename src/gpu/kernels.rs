//! NVRTC-compiled kernels (being written).
