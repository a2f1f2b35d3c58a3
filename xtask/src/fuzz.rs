//! `cargo xtask fuzz`: short smoke runs of every fuzz target.
use anyhow::Result;

/// Options of `fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// seconds per target
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Placeholder until fuzz targets land.
pub fn run(a: Args) -> Result<()> {
    eprintln!("xtask fuzz: no targets yet ({} s each)", a.seconds);
    Ok(())
}
