//! The relay's configuration and its postcard blob.
//!
//! A board carries a default blob built from a TOML file at build time (see
//! the board's `build.rs` and [`FwConfig::from_toml`]); a blob found in the
//! board's persistent storage at boot overrides it. The blob is
//! [`MAGIC`] followed by the postcard encoding of [`FwConfig`].
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// First bytes of every config blob (format version 1).
pub const MAGIC: [u8; 4] = *b"LGC1";
/// Upper bound of an encoded blob.
pub const BLOB_MAX: usize = 256;
/// How many collectors a relay sends to (primary and secondary).
pub const MAX_COLLECTORS: usize = 2;

/// How the relay gets its IPv4 address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Ipv4Setup {
    /// A fixed address and prefix length.
    Static {
        /// The relay's address.
        addr: [u8; 4],
        /// Its prefix length (0..=32).
        prefix_len: u8,
    },
    /// DHCPv4; the relay starts once it has a lease.
    Dhcp,
}

/// Where last-gasp frames go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Collector {
    /// The collector's IPv4 address.
    pub ip: [u8; 4],
    /// Its UDP port (netconsole's default is 6666).
    pub port: u16,
    /// The relay's UDP source port.
    pub src_port: u16,
}

/// An 802.1Q tag put on every last-gasp frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// VLAN id (1..=4094).
    pub vid: u16,
}

/// Everything a relay needs to know at boot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FwConfig {
    /// Identifies this relay in reports and in the bridge's keyring.
    pub relay_id: String<32>,
    /// The Kubernetes node (host) this relay watches.
    pub node_name: String<64>,
    /// HMAC-SHA256 key of the signed report.
    pub key: [u8; 32],
    /// Overrides the NIC's own MAC address.
    pub mac: Option<[u8; 6]>,
    /// The relay's IPv4 address.
    pub ipv4: Ipv4Setup,
    /// Default gateway: collectors off the subnet are reached through it.
    pub gateway: Option<[u8; 4]>,
    /// 802.1Q tag of last-gasp frames.
    pub vlan: Option<Vlan>,
    /// IP MTU of last-gasp frames.
    pub mtu: u16,
    /// Primary, then secondary collector.
    pub collectors: Vec<Collector, MAX_COLLECTORS>,
    /// How often each collector's MAC is re-resolved with ARP.
    pub arp_refresh_secs: u16,
    /// Mirror every console line as extended netconsole, not only the
    /// context and the lines around a crash.
    pub mirror_console: bool,
    /// Rate limit of the mirror (0: relay-core's default).
    pub mirror_lines_per_sec: u32,
}

/// A configuration that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "firmware", derive(defmt::Format))]
pub enum ConfigError {
    /// The blob does not start with [`MAGIC`].
    BadMagic,
    /// The blob is not a valid postcard encoding of [`FwConfig`].
    Decode,
    /// The encoded config does not fit the output buffer.
    TooLarge,
    /// No collector configured.
    NoCollector,
    /// Prefix length above 32.
    BadPrefix(u8),
    /// MTU outside 576..=1500.
    BadMtu(u16),
    /// VLAN id outside 1..=4094 or PCP above 7.
    BadVlan,
    /// A collector with port 0, or address 0.0.0.0.
    BadCollector(u8),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::BadMagic => write!(f, "config blob does not start with LGC1"),
            ConfigError::Decode => write!(f, "config blob is not a valid postcard FwConfig"),
            ConfigError::TooLarge => write!(f, "config does not fit {BLOB_MAX} bytes"),
            ConfigError::NoCollector => write!(f, "no collector configured"),
            ConfigError::BadPrefix(p) => write!(f, "prefix length {p} is above 32"),
            ConfigError::BadMtu(m) => write!(f, "mtu {m} is outside 576..=1500"),
            ConfigError::BadVlan => write!(f, "vlan id must be 1..=4094 and pcp 0..=7"),
            ConfigError::BadCollector(i) => {
                write!(f, "collector {i} has address 0.0.0.0 or port 0")
            }
        }
    }
}

impl FwConfig {
    /// Check the values that the types alone do not rule out.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.collectors.is_empty() {
            return Err(ConfigError::NoCollector);
        }
        if let Ipv4Setup::Static { prefix_len, .. } = self.ipv4 {
            if prefix_len > 32 {
                return Err(ConfigError::BadPrefix(prefix_len));
            }
        }
        if !(576..=1500).contains(&self.mtu) {
            return Err(ConfigError::BadMtu(self.mtu));
        }
        if let Some(v) = self.vlan {
            if v.pcp > 7 || v.vid == 0 || v.vid > 4094 {
                return Err(ConfigError::BadVlan);
            }
        }
        for (i, c) in self.collectors.iter().enumerate() {
            if c.port == 0 || c.ip == [0; 4] {
                return Err(ConfigError::BadCollector(i as u8));
            }
        }
        Ok(())
    }

    /// Encode as a blob into `out`; returns its length.
    pub fn to_blob(&self, out: &mut [u8]) -> Result<usize, ConfigError> {
        let (head, body) = out
            .split_at_mut_checked(MAGIC.len())
            .ok_or(ConfigError::TooLarge)?;
        head.copy_from_slice(&MAGIC);
        let used = postcard::to_slice(self, body)
            .map_err(|_| ConfigError::TooLarge)?
            .len();
        Ok(MAGIC.len() + used)
    }

    /// Decode and validate a blob.
    pub fn from_blob(blob: &[u8]) -> Result<Self, ConfigError> {
        let body = blob.strip_prefix(&MAGIC[..]).ok_or(ConfigError::BadMagic)?;
        let cfg: FwConfig = postcard::from_bytes(body).map_err(|_| ConfigError::Decode)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether `ip` is on the relay's own subnet (so ARP resolves it directly).
    pub fn on_link(&self, ip: [u8; 4], own: [u8; 4], prefix_len: u8) -> bool {
        let _ = self;
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len.min(32)))
        };
        u32::from_be_bytes(ip) & mask == u32::from_be_bytes(own) & mask
    }
}

#[cfg(feature = "toml")]
mod from_toml {
    //! The TOML form, for build scripts and tools on the host.
    extern crate std;
    use super::*;
    use std::format;
    use std::string::{String as StdString, ToString};
    use std::vec::Vec as StdVec;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TomlCollector {
        ip: Spanned<StdString>,
        port: u16,
        src_port: Option<u16>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TomlConfig {
        relay_id: Spanned<StdString>,
        node_name: Spanned<StdString>,
        key: Spanned<StdString>,
        mac: Option<Spanned<StdString>>,
        address: Spanned<StdString>,
        gateway: Option<Spanned<StdString>>,
        vlan_id: Option<u16>,
        vlan_pcp: Option<u8>,
        mtu: Option<u16>,
        arp_refresh_secs: Option<u16>,
        mirror_console: Option<bool>,
        mirror_lines_per_sec: Option<u32>,
        collectors: StdVec<TomlCollector>,
    }

    fn line_of(text: &str, pos: usize) -> usize {
        text.get(..pos).map_or(0, |t| t.matches('\n').count()) + 1
    }

    fn parse_ipv4(text: &str, s: &Spanned<StdString>) -> Result<[u8; 4], StdString> {
        s.get_ref()
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.octets())
            .map_err(|_| {
                format!(
                    "line {}: `{}` is not an IPv4 address",
                    line_of(text, s.span().start),
                    s.get_ref()
                )
            })
    }

    impl FwConfig {
        /// Parse the TOML form (see `boards/qemu-mps2-an386/config.toml`).
        /// Errors name the line of the fault.
        pub fn from_toml(text: &str) -> Result<Self, StdString> {
            let t: TomlConfig = toml::from_str(text).map_err(|e| e.to_string())?;
            let at = |s: usize| line_of(text, s);
            let relay_id = String::try_from(t.relay_id.get_ref().as_str()).map_err(|_| {
                format!(
                    "line {}: relay_id is longer than 32 bytes",
                    at(t.relay_id.span().start)
                )
            })?;
            let node_name = String::try_from(t.node_name.get_ref().as_str()).map_err(|_| {
                format!(
                    "line {}: node_name is longer than 64 bytes",
                    at(t.node_name.span().start)
                )
            })?;
            let key_hex = t.key.get_ref();
            let mut key = [0u8; 32];
            let bad_key = || {
                format!(
                    "line {}: key must be 64 hex digits (32 bytes)",
                    at(t.key.span().start)
                )
            };
            if key_hex.len() != 64 || !key_hex.is_ascii() {
                return Err(bad_key());
            }
            for (i, k) in key.iter_mut().enumerate() {
                *k = u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).map_err(|_| bad_key())?;
            }
            let mac = match &t.mac {
                None => None,
                Some(m) => {
                    let parts: StdVec<_> = m
                        .get_ref()
                        .split(':')
                        .map(|p| u8::from_str_radix(p, 16))
                        .collect();
                    match parts.as_slice() {
                        [Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f)] => {
                            Some([*a, *b, *c, *d, *e, *f])
                        }
                        _ => {
                            return Err(format!(
                                "line {}: mac must look like 02:00:00:00:00:01",
                                at(m.span().start)
                            ))
                        }
                    }
                }
            };
            let ipv4 = if t.address.get_ref() == "dhcp" {
                Ipv4Setup::Dhcp
            } else {
                let bad = || {
                    format!(
                        "line {}: address must be \"dhcp\" or like \"10.0.0.2/24\"",
                        at(t.address.span().start)
                    )
                };
                let (a, p) = t.address.get_ref().split_once('/').ok_or_else(bad)?;
                let addr = a.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?.octets();
                let prefix_len = p.parse::<u8>().map_err(|_| bad())?;
                Ipv4Setup::Static { addr, prefix_len }
            };
            let gateway = t
                .gateway
                .as_ref()
                .map(|g| parse_ipv4(text, g))
                .transpose()?;
            let vlan = t.vlan_id.map(|vid| Vlan {
                vid,
                pcp: t.vlan_pcp.unwrap_or(0),
            });
            let mut collectors = Vec::new();
            for c in &t.collectors {
                let ip = parse_ipv4(text, &c.ip)?;
                collectors
                    .push(Collector {
                        ip,
                        port: c.port,
                        src_port: c.src_port.unwrap_or(6665),
                    })
                    .map_err(|_| {
                        format!(
                            "line {}: at most {MAX_COLLECTORS} collectors",
                            at(c.ip.span().start)
                        )
                    })?;
            }
            let cfg = FwConfig {
                relay_id,
                node_name,
                key,
                mac,
                ipv4,
                gateway,
                vlan,
                mtu: t.mtu.unwrap_or(1500),
                collectors,
                arp_refresh_secs: t.arp_refresh_secs.unwrap_or(30),
                mirror_console: t.mirror_console.unwrap_or(true),
                mirror_lines_per_sec: t.mirror_lines_per_sec.unwrap_or(0),
            };
            cfg.validate().map_err(|e| e.to_string())?;
            Ok(cfg)
        }
    }
}
