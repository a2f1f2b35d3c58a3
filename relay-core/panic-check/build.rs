//! Link flags for a bare link: no C runtime, no libc, so the only code in the
//! binary is relay-core's and core's. Bare-metal targets need none of this.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        for arg in ["-nostartfiles", "-nostdlib", "-static", "-Wl,-e,_start"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
