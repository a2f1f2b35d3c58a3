//! Shared helpers for lastgasp's end-to-end tests (network namespaces, QEMU,
//! an in-process Kubernetes API server).
pub mod apiserver;
/// A way out of the rig's namespace to a real cluster from `KUBECONFIG`.
pub mod gateway;
/// Skip-or-fail rule for tests that need root and installed packages.
pub mod prereq;
/// Private network namespaces with taps, for QEMU guests and test sockets.
pub mod netns;
/// The relay firmware image in QEMU (mps2-an386), driven by a test.
pub mod qemu;
/// A real Linux host (Debian's kernel, busybox initramfs) in qemu-system-x86_64.
pub mod linux_host;
/// The end-to-end story (relay, bridge, API server, real Linux host), shared
/// by the demo and the e2e tests.
pub mod scenario;
