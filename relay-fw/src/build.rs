//! The build script every board shares (host side, `toml` feature): puts
//! the board's `memory.x` on the linker's path and turns the relay
//! configuration (`config.toml` in the board's directory, or the file named
//! by `LASTGASP_FW_CONFIG`) into the postcard blob the firmware boots with,
//! `$OUT_DIR/config.bin` (also what is flashed into a board's config sector).
extern crate std;

use std::format;
use std::path::PathBuf;
use std::println;
use std::string::String;

/// Runs from a board's `build.rs`; the error names the file at fault.
pub fn board() -> Result<(), String> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    std::fs::copy("memory.x", out.join("memory.x")).map_err(|e| format!("copying memory.x: {e}"))?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=LASTGASP_FW_CONFIG");
    let path = std::env::var("LASTGASP_FW_CONFIG").unwrap_or_else(|_| "config.toml".into());
    println!("cargo:rerun-if-changed={path}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let cfg = crate::FwConfig::from_toml(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut blob = [0u8; crate::config::BLOB_MAX];
    let n = cfg.to_blob(&mut blob).map_err(|e| format!("{path}: {e}"))?;
    let blob = blob.get(..n).ok_or("blob longer than its buffer")?;
    std::fs::write(out.join("config.bin"), blob).map_err(|e| format!("writing config.bin: {e}"))
}
