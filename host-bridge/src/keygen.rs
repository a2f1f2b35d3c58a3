//! `host-bridge keygen`: a fresh relay key and the matching keyring entry.
use std::fmt::Write;

/// A random 32-byte key.
pub fn new_key() -> anyhow::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(k)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The `[[keyring]]` TOML block for the bridge config.
pub fn keyring_entry(relay_id: &str, node: &str, addresses: &[String], key: &[u8; 32]) -> String {
    let addrs = addresses.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!("[[keyring]]\nrelay_id = \"{relay_id}\"\nnode = \"{node}\"\nkey = \"{}\"\naddresses = [{addrs}]\n", hex(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_parses_back() {
        let k = new_key().unwrap();
        let toml = keyring_entry("bmc-1", "worker-1", &["10.0.0.5".into()], &k);
        let (_, v) = crate::serve::config::Config::parse(&toml, "k.toml".as_ref(), ".".as_ref()).unwrap();
        assert_eq!(v.keyring[0].key, k);
        assert_eq!(v.keyring[0].node, "worker-1");
    }
}
