//! What survives a restart: the boot counter (bumped once per start, so the
//! bridge's (boot counter, sequence) freshness check holds across BMC reboots
//! and relay restarts) and the report key.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// File name of the boot counter inside the state directory.
pub const BOOT_COUNTER_FILE: &str = "boot-counter";

/// Read, increment and durably store the boot counter; returns the new value.
/// A missing file starts at 1. A damaged file is an error, not a reset: a
/// counter that went backwards would make the bridge refuse every report as
/// a replay.
pub fn bump_boot_counter(state_dir: &Path) -> Result<u32> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let path = state_dir.join(BOOT_COUNTER_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .with_context(|| format!("{} is damaged ({:?}); fix or remove it deliberately", path.display(), text.trim()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let Some(next) = previous.checked_add(1) else {
        bail!("{} reached u32::MAX; the relay needs a new key and a reset counter", path.display());
    };
    // Write-to-temp, fsync, rename, fsync dir: a crash leaves the old or the new value.
    let tmp = state_dir.join(format!("{BOOT_COUNTER_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        writeln!(f, "{next}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(state_dir)?.sync_all()?;
    Ok(next)
}

/// Load the 32-byte report key: 64 hex digits (whitespace around is fine) or
/// exactly 32 raw bytes. Warns when others may read it.
pub fn load_key(path: &Path) -> Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "key file is readable by group/others; chmod 600 it");
        }
    }
    parse_key(&bytes).with_context(|| format!("key file {}", path.display()))
}

/// Parse key file contents (see [`load_key`]).
pub fn parse_key(bytes: &[u8]) -> Result<[u8; 32]> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(hex) = text.filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        let mut key = [0u8; 32];
        for (k, pair) in key.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let s = std::str::from_utf8(pair)?;
            *k = u8::from_str_radix(s, 16)?;
        }
        return Ok(key);
    }
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Ok(raw);
    }
    bail!("expected 64 hex digits or 32 raw bytes, found {} bytes", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lastgasp-openbmc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn boot_counter_counts_up_and_refuses_damage() -> Result<()> {
        let d = tempdir("boot");
        assert_eq!(bump_boot_counter(&d)?, 1);
        assert_eq!(bump_boot_counter(&d)?, 2);
        assert_eq!(std::fs::read_to_string(d.join(BOOT_COUNTER_FILE))?, "2\n");
        std::fs::write(d.join(BOOT_COUNTER_FILE), "garbage")?;
        let e = bump_boot_counter(&d).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("damaged"), "{e}");
        std::fs::write(d.join(BOOT_COUNTER_FILE), format!("{}", u32::MAX))?;
        assert!(bump_boot_counter(&d).is_err());
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }

    #[test]
    fn keys_in_hex_or_raw() -> Result<()> {
        let hex = format!("{}\n", "0f".repeat(32));
        assert_eq!(parse_key(hex.as_bytes())?, [0x0f; 32]);
        assert_eq!(parse_key(&[7u8; 32])?, [7; 32]);
        assert!(parse_key(b"0f0f").is_err());
        assert!(parse_key(&[7u8; 33]).is_err());
        Ok(())
    }
}
