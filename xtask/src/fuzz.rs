//! `cargo xtask fuzz`: short smoke runs of every cargo-fuzz target in
//! relay-core/fuzz (targets are discovered with `cargo fuzz list`, so new
//! ones join without touching this file).
//!
//! cargo-fuzz needs nightly compiler flags; the stable toolchain gets them
//! through `RUSTC_BOOTSTRAP=1`, so a fresh machine needs nothing but rustup's
//! stable. Any crash, leak or timeout fails the task and leaves the input in
//! relay-core/fuzz/artifacts/<target>/.
use crate::util::{root, run as sh};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Only run targets whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Sanitizer for cargo-fuzz (`address`, or `none` where ASan is unavailable).
    #[arg(long, default_value = "address")]
    pub sanitizer: String,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            seconds: 10,
            only: None,
            sanitizer: "address".into(),
        }
    }
}

/// The crate whose `fuzz/` directory holds the targets.
fn fuzz_parent() -> PathBuf {
    root().join("relay-core")
}

/// `cargo fuzz` with the environment it needs on a stable toolchain.
fn cargo_fuzz(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(dir).env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("xtask fuzz: cargo-fuzz not found, installing it");
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

fn list_targets(dir: &Path) -> Result<Vec<String>> {
    let out = cargo_fuzz(dir)
        .arg("list")
        .output()
        .context("could not run `cargo fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Build every target once; with ASan unavailable, fall back to no sanitizer.
fn build(dir: &Path, sanitizer: &str) -> Result<String> {
    let ok = cargo_fuzz(dir)
        .args(["build", "-s", sanitizer])
        .status()
        .context("could not run `cargo fuzz build`")?
        .success();
    if ok {
        return Ok(sanitizer.to_owned());
    }
    if sanitizer != "none" {
        eprintln!("xtask fuzz: build with -s {sanitizer} failed, retrying without a sanitizer");
        sh(cargo_fuzz(dir).args(["build", "-s", "none"]))?;
        return Ok("none".into());
    }
    bail!("`cargo fuzz build` failed")
}

/// Smoke-run every fuzz target for `a.seconds` seconds; fail on any finding.
pub fn run(a: Args) -> Result<()> {
    ensure_cargo_fuzz()?;
    let dir = fuzz_parent();
    let targets: Vec<String> = list_targets(&dir)?
        .into_iter()
        .filter(|t| a.only.as_deref().is_none_or(|o| t.contains(o)))
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets found in {}", dir.join("fuzz").display());
    }
    let sanitizer = build(&dir, &a.sanitizer)?;
    let mut failed = Vec::new();
    for t in &targets {
        let corpus = dir.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let mut cmd = cargo_fuzz(&dir);
        cmd.args(["run", "-s", &sanitizer, t]).arg(&corpus);
        // Seeds from the real captures, read-only (new inputs go to `corpus`).
        let seeds = dir.join("fuzz/seeds").join(t);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={}", a.seconds))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=1024");
        eprintln!("xtask fuzz: {t} for {} s (-s {sanitizer})", a.seconds);
        if let Err(e) = sh(&mut cmd) {
            eprintln!("xtask fuzz: {t} FAILED: {e:#}");
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in {})",
            failed.join(", "),
            dir.join("fuzz/artifacts").display()
        );
    }
    eprintln!("xtask fuzz: {} targets ran clean", targets.len());
    Ok(())
}
