//! memory.x on the linker's path, and the relay configuration (config.toml
//! here, or the file named by LASTGASP_FW_CONFIG) as the postcard blob the
//! firmware boots with: relay-fw's shared board build script.
fn main() -> Result<(), String> {
    relay_fw::build::board()
}
