//! Skip-or-fail for tests that need root and installed packages: one rule for
//! the firmware and the Linux-host tests, so CI can never skip silently.
use std::path::Path;

/// Set to `1` (by `cargo xtask test`) to turn a skip into a failure.
pub const REQUIRE_ENV: &str = "LASTGASP_REQUIRE_QEMU";

/// Why the test cannot run: not root, or the first `(path, package)` missing.
pub fn missing(paths: &[(&str, &str)]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and taps need root)".into());
    }
    paths.iter().find(|(p, _)| !Path::new(p).exists()).map(|(p, pkg)| {
        format!("{p} missing (package {pkg}; run `cargo xtask setup`)")
    })
}

/// True when nothing is `missing`; otherwise prints why `test` is skipped, or
/// panics when [`REQUIRE_ENV`] is 1.
pub fn available(test: &str, doing: &str, missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: cannot {doing}: {why} ({REQUIRE_ENV}=1)")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}
