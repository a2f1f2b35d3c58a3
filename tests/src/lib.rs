//! Shared helpers for lastgasp's end-to-end tests (network namespaces, QEMU,
//! an in-process Kubernetes API server).
pub mod apiserver;
