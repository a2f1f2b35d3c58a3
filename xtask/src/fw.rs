//! `cargo xtask fw build|run|size --board <name>`.
//!
//! Firmware is built by Debian's cargo/rustc 1.96 (`rustc-web`) with
//! `-Z build-std`, from *inside* `boards/<name>/`: cargo reads
//! `rust-toolchain.toml` and `.cargo/config.toml` from the current directory
//! only, so a `--manifest-path` call from the root would silently use the host
//! toolchain. This module hides that.
use crate::util::{root, run as sh};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's cargo (package `cargo-web`).
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's rustc (package `rustc-web`).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// core/alloc sources for build-std (package `rust-web-src`).
pub const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

/// What to do with the board's firmware.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Build the release image.
    Build,
    /// Build, then run it with the board's runner (QEMU for emulated boards).
    Run,
    /// Build, then print flash and static RAM use of the image.
    Size,
    /// Link relay-core's panic-free check (relay-core/panic-check) for the
    /// board's target, with Debian's toolchain and build-std.
    PanicCheck,
}

/// Options of `fw`.
#[derive(clap::Args)]
pub struct Args {
    /// build, run, size or panic-check
    #[arg(value_enum)]
    pub action: Action,
    /// board directory name under boards/
    #[arg(long, default_value = QEMU_BOARD)]
    pub board: String,
}

/// The firmware boards: directories under boards/ with their own
/// rust-toolchain.toml (boards that are Linux programs, such as openbmc,
/// build in the host workspace instead).
pub fn boards() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("boards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.path().join("Cargo.toml").is_file() && e.path().join("rust-toolchain.toml").is_file()
        })
        // boards/openbmc is a std Linux program in the host workspace (xtask openbmc)
        .filter(|e| e.path().join(".cargo/config.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Fail with a clear message when Debian's firmware toolchain is absent.
pub fn check_toolchain() -> Result<()> {
    let missing: Vec<&str> = [DEBIAN_CARGO, DEBIAN_RUSTC, RUST_SRC]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the firmware toolchain is not installed (missing {}).\n\
             Run `cargo xtask setup` (installs rustc-web, cargo-web, rust-web-src, \
             rust-web-llvm, lld-22, qemu-system-arm).",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Debian's cargo, started inside `dir`, with the host toolchain's
/// environment (rustup's overrides, RUSTC set by an outer cargo) removed.
pub fn debian_cargo(dir: &Path) -> Command {
    let mut c = Command::new(DEBIAN_CARGO);
    c.current_dir(dir);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    c.env("RUSTC", DEBIAN_RUSTC);
    c
}

/// The board's directory, or an error listing the boards that exist.
pub fn board_dir(board: &str) -> Result<PathBuf> {
    let dir = root().join("boards").join(board);
    if !dir.join("Cargo.toml").is_file() {
        bail!("no board `{board}`; boards: {}", boards().join(", "));
    }
    Ok(dir)
}

/// Path of the release ELF of `board` (its target triple is read from the
/// board's .cargo/config.toml).
pub fn image_path(board: &str) -> Result<PathBuf> {
    let dir = board_dir(board)?;
    Ok(dir
        .join("target")
        .join(target(board)?)
        .join("release")
        .join(board))
}

/// The target triple of `board` (from its .cargo/config.toml).
pub fn target(board: &str) -> Result<String> {
    let dir = board_dir(board)?;
    let cfg = std::fs::read_to_string(dir.join(".cargo/config.toml"))
        .with_context(|| format!("reading boards/{board}/.cargo/config.toml"))?;
    cfg.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("target = "))
        .map(|t| t.trim_matches('"').to_string())
        .context("no `target = ...` in the board's .cargo/config.toml")
}

/// relay-core's link-time panic check, linked for `board`'s target: the
/// optimiser must remove every panic path on that target too (32-bit
/// targets prove fewer bounds than x86_64 does).
pub fn panic_check(board: &str) -> Result<()> {
    check_toolchain()?;
    let target = target(board)?;
    let dir = root().join("relay-core/panic-check");
    sh(debian_cargo(&dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["build", "--release", "--target", &target])
        .args([
            "-Z",
            "build-std=core",
            "-Z",
            "build-std-features=compiler-builtins-mem",
        ]))
    .with_context(|| {
        format!(
            "relay-core has a reachable panic path on {target} (the link needs \
             relay_core_panic_path_reachable)"
        )
    })?;
    eprintln!("xtask fw: relay-core links without any panic path on {target}");
    Ok(())
}

/// Build the release image of `board`; returns the ELF path.
pub fn build(board: &str) -> Result<PathBuf> {
    check_toolchain()?;
    let dir = board_dir(board)?;
    sh(debian_cargo(&dir).args(["build", "--release", "--locked"]))?;
    image_path(board)
}

/// Run the action.
pub fn run(a: Args) -> Result<()> {
    match a.action {
        Action::Build => {
            let elf = build(&a.board)?;
            eprintln!("xtask fw: built {}", elf.display());
        }
        Action::Run => {
            check_toolchain()?;
            let dir = board_dir(&a.board)?;
            sh(debian_cargo(&dir).args(["run", "--release", "--locked"]))?;
        }
        Action::PanicCheck => panic_check(&a.board)?,
        Action::Size => {
            let elf = build(&a.board)?;
            let s = elf_size(&elf)?;
            println!(
                "{}: flash {} B ({:.1} KiB), static RAM {} B ({:.1} KiB)",
                a.board,
                s.flash,
                s.flash as f64 / 1024.0,
                s.ram,
                s.ram as f64 / 1024.0
            );
            for (name, size, kind) in &s.sections {
                println!("  {name:24} {size:8} {kind}");
            }
        }
    }
    Ok(())
}

/// Flash and static RAM of an image, from its ELF section headers.
pub struct Size {
    /// Bytes stored in flash: code, read-only data, initial values of .data.
    pub flash: u64,
    /// Bytes of RAM reserved at link time: .data, .bss, .uninit (the stack
    /// is the rest of RAM and not counted).
    pub ram: u64,
    /// (name, size, "flash" | "ram" | "flash+ram") of each allocated section.
    pub sections: Vec<(String, u64, &'static str)>,
}

/// The emulated board every QEMU test and the demo run.
pub const QEMU_BOARD: &str = "qemu-mps2-an386";

/// Sizes of a 32-bit little-endian ELF (what every Cortex-M image is).
pub fn elf_size(path: &Path) -> Result<Size> {
    let d = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| -> Result<u64> {
        d.get(o..o + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
            .context("truncated ELF")
    };
    let u32_at = |o: usize| -> Result<u64> {
        d.get(o..o + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .context("truncated ELF")
    };
    if d.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 1, 1][..]) {
        bail!("{} is not a 32-bit little-endian ELF", path.display());
    }
    let shoff = u32_at(0x20)? as usize;
    let shentsize = u16_at(0x2e)? as usize;
    let shnum = u16_at(0x30)? as usize;
    let shstrndx = u16_at(0x32)? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u32_at(sh(shstrndx) + 0x10)? as usize;
    let name_at = |o: usize| -> String {
        let s = d.get(strtab + o..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    const SHF_WRITE: u64 = 1;
    const SHF_ALLOC: u64 = 2;
    const SHT_NOBITS: u64 = 8;
    let mut s = Size {
        flash: 0,
        ram: 0,
        sections: Vec::new(),
    };
    for i in 0..shnum {
        let base = sh(i);
        let (name, ty, flags, size) = (
            u32_at(base)?,
            u32_at(base + 4)?,
            u32_at(base + 8)?,
            u32_at(base + 0x14)?,
        );
        if flags & SHF_ALLOC == 0 || size == 0 {
            continue;
        }
        let kind = if ty == SHT_NOBITS {
            s.ram += size;
            "ram"
        } else if flags & SHF_WRITE != 0 {
            s.flash += size;
            s.ram += size;
            "flash+ram"
        } else {
            s.flash += size;
            "flash"
        };
        s.sections.push((name_at(name as usize), size, kind));
    }
    Ok(s)
}
