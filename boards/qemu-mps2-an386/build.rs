//! Puts memory.x on the linker's path and turns the relay configuration
//! (config.toml here, or the file named by LASTGASP_FW_CONFIG) into the
//! postcard blob the firmware boots with.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=LASTGASP_FW_CONFIG");
    let path = env::var("LASTGASP_FW_CONFIG").unwrap_or_else(|_| "config.toml".into());
    println!("cargo:rerun-if-changed={path}");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let cfg = relay_fw::FwConfig::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut blob = [0u8; relay_fw::config::BLOB_MAX];
    let n = cfg
        .to_blob(&mut blob)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    fs::write(out.join("config.bin"), &blob[..n]).expect("write config.bin");
}
