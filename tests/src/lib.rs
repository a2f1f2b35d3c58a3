//! Shared helpers for lastgasp's end-to-end tests (network namespaces, QEMU,
//! an in-process Kubernetes API server).
pub mod apiserver;
/// Private network namespaces with taps, for QEMU guests and test sockets.
pub mod netns;
/// The relay firmware image in QEMU (mps2-an386), driven by a test.
pub mod qemu;
