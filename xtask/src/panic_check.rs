//! `cargo xtask panic-check`: the link-time proof that relay-core's public API
//! has no panic path (see relay-core/panic-check/src/main.rs).
use crate::util::{root, run as sh};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Options of `panic-check`.
#[derive(clap::Args)]
pub struct Args {
    /// Target triple to link for (default: the host). Bare-metal targets such
    /// as thumbv7em-none-eabihf are built with Debian's firmware toolchain
    /// and `-Z build-std=core` (see `cargo xtask setup`).
    #[arg(long)]
    pub target: Option<String>,
    /// Instead of failing, link with a looping panic handler and list the
    /// source lines that still reach a panic (needs objdump; host target).
    #[arg(long)]
    pub locate: bool,
}

/// The build command: the host toolchain for the host; Debian's firmware
/// toolchain with `-Z build-std=core` for a bare-metal target (`*-none*`).
fn cargo(a: &Args) -> Result<Command> {
    let dir = root().join("relay-core/panic-check");
    let mut cmd = match &a.target {
        Some(t) if t.contains("-none") => {
            crate::fw::check_toolchain()?;
            let mut c = crate::fw::debian_cargo(&dir);
            c.env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", dir.join("target/fw"))
                .args(["build", "-Z", "build-std=core"]);
            c
        }
        _ => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.current_dir(&dir)
                .env("CARGO_TARGET_DIR", dir.join("target"))
                .arg("build");
            c
        }
    };
    cmd.args(["--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"));
    if let Some(t) = &a.target {
        cmd.args(["--target", t]);
    }
    Ok(cmd)
}

/// Build relay-core/panic-check in release (opt-level 3, fat LTO,
/// panic=abort). The link fails with `undefined symbol:
/// relay_core_panic_path_reachable` if any panic path survives.
pub fn run(a: Args) -> Result<()> {
    if a.locate {
        return locate(&a);
    }
    sh(&mut cargo(&a)?).context(
        "panic-check failed; if the linker reports \
         `undefined symbol: relay_core_panic_path_reachable`, relay-core has a \
         reachable panic path (run `cargo xtask panic-check --locate` to find it)",
    )?;
    eprintln!(
        "xtask panic-check: relay-core's public API links without any panic path ({})",
        a.target.as_deref().unwrap_or("host")
    );
    Ok(())
}

/// Link with `--features locate` and line tables, then print every call into
/// `core::panicking` (and friends) with the project source lines before it.
fn locate(a: &Args) -> Result<()> {
    if a.target.is_some() {
        bail!("--locate works for the host target only");
    }
    sh(cargo(a)?
        .args(["--features", "locate"])
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only"))?;
    let bin = root().join("relay-core/panic-check/target/release/panic-check");
    let out = Command::new("objdump")
        .args(["-dl", "--no-show-raw-insn", "-C"])
        .arg(&bin)
        .output()
        .context("objdump (binutils) is needed for --locate")?;
    let asm = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = asm.lines().collect();
    let is_panic = |sym: &str| {
        [
            "panicking",
            "panic_bounds_check",
            "_fail",
            "unwrap_failed",
            "expect_failed",
            "panic_fmt",
        ]
        .iter()
        .any(|p| sym.contains(p))
    };
    // Addresses of the panic functions, as they appear as jump/call targets.
    let mut panic_fns = Vec::new();
    for l in &lines {
        if let Some((addr, rest)) = l.split_once(" <") {
            if rest.ends_with(">:") && is_panic(rest) {
                panic_fns.push(format!(" {} <", addr.trim_start_matches('0')));
            }
        }
    }
    let source_before = |i: usize| -> Vec<&str> {
        let mut found = Vec::new();
        for l in lines[..i].iter().rev() {
            if l.starts_with('/')
                && l.contains(".rs:")
                && !l.starts_with("/rustc/")
                && !found.contains(l)
            {
                found.push(*l);
                if found.len() == 3 {
                    break;
                }
            }
        }
        found
    };
    let mut sites = 0;
    let mut in_panic_fn = false;
    for (i, l) in lines.iter().enumerate() {
        if l.ends_with(">:") && !l.starts_with(' ') {
            in_panic_fn = is_panic(l);
        }
        if in_panic_fn {
            continue; // core's own panic plumbing
        }
        let is_call = (l.contains("\tcall ") || l.contains("\tjmp "))
            && panic_fns.iter().any(|f| l.contains(f.as_str()));
        if !is_call {
            continue;
        }
        sites += 1;
        println!("panic call: {}", l.trim());
        // Jumps into the few instructions before the call.
        for back in 0..4 {
            let Some(addr) = lines
                .get(i.saturating_sub(back))
                .and_then(|x| x.trim_start().split_once(':'))
            else {
                continue;
            };
            let needle = format!(" {} <", addr.0);
            for (j, jl) in lines.iter().enumerate() {
                if jl.contains("\tj") && jl.contains(&needle) {
                    println!("  reached from {:?}", source_before(j));
                }
            }
        }
        println!("  at {:?}", source_before(i));
    }
    println!("{sites} panic call site(s)");
    Ok(())
}
