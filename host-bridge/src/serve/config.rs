//! TOML configuration, validated at startup with the line and column of every fault.
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::act::Policy;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP ingest.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Decoding (netconsole reassembly, relay reports).
    #[serde(default)]
    pub decode: DecodeConfig,
    /// Detection rules.
    #[serde(default)]
    pub detect: DetectConfig,
    /// Incident keying, dedup and context.
    #[serde(default)]
    pub incident: IncidentConfig,
    /// Durable journal.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Actions.
    #[serde(default)]
    pub act: ActConfig,
    /// Which plain-netconsole sources are trusted.
    #[serde(default)]
    pub trust: TrustConfig,
    /// HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/incidents`).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Relay keys: relay id → key, node.
    #[serde(default)]
    pub keyring: Vec<KeyringEntry>,
    /// Kubernetes side (used when `act.actuator = "kubernetes"`).
    #[serde(default)]
    pub kube: crate::kube::KubeSettings,
    /// Directory relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[ingest]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Listen addresses, IPv4 and/or IPv6 (`[::]:6666` is v6-only; list `0.0.0.0:6666` too).
    pub listen: Vec<Spanned<String>>,
    /// SO_REUSEPORT sockets per listen address (the kernel spreads sources across them).
    pub sockets_per_address: usize,
    /// Datagrams per `recvmmsg` call.
    pub batch: usize,
    /// Largest datagram accepted, bytes; larger ones are counted as `oversized` and dropped.
    pub max_datagram: usize,
    /// SO_RCVBUF request, bytes (the kernel may cap it at net.core.rmem_max).
    pub recv_buffer: usize,
    /// Decode/detect workers; sources are sharded to them by a hash of the source address.
    pub workers: usize,
    /// Capacity of each worker's queue, in datagrams.
    pub queue: usize,
    /// Most sources tracked at once (all workers); the least recently seen is evicted.
    pub max_sources: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                Spanned::new(0..0, "0.0.0.0:6666".into()),
                Spanned::new(0..0, "[::]:6666".into()),
            ],
            sockets_per_address: 1,
            batch: 64,
            max_datagram: 2048,
            recv_buffer: 8 << 20,
            workers: 2,
            queue: 65536,
            max_sources: 16384,
        }
    }
}

/// `[decode]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// How long an incomplete ncfrag message waits for its missing fragments.
    #[serde(with = "duration")]
    pub reassembly_timeout: Duration,
    /// Longest console line kept (longer lines are truncated and flagged).
    pub max_line: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            reassembly_timeout: Duration::from_secs(2),
            max_line: 4096,
        }
    }
}

/// `[detect]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Use relay-core's built-in rules (panic, oops, lockups, MCE, ...).
    pub builtin: bool,
    /// node-problem-detector `kernel-monitor.json` files, loaded unchanged.
    pub npd_rule_files: Vec<Spanned<PathBuf>>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            npd_rule_files: Vec::new(),
        }
    }
}

/// `[incident]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// Lines of context kept before the trigger (per source ring when the relay sent none).
    pub context_before: usize,
    /// Lines collected after the trigger (counted down, then collection stops).
    pub context_after: u16,
    /// A fatal incident with no end marker is confirmed after this much console silence.
    #[serde(with = "duration")]
    pub confirm_after_silence: Duration,
    /// Repeats of the same incident within this window (and the same boot) are deduplicated.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            context_before: 30,
            context_after: 20,
            confirm_after_silence: Duration::from_secs(3),
            dedup_window: Duration::from_secs(600),
        }
    }
}

/// `[journal]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// redb file (systemd: under StateDirectory).
    pub path: Spanned<PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: Spanned::new(0..0, PathBuf::from("/var/lib/host-bridge/journal.redb")),
        }
    }
}

/// Which actuator carries out the steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActuatorKind {
    /// Append steps to `record_log` (no cluster needed).
    #[default]
    RecordOnly,
    /// Kubernetes via kube-rs.
    Kubernetes,
}

/// `[act]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActConfig {
    /// `record-only` or `kubernetes`.
    pub actuator: ActuatorKind,
    /// Log of the record-only actuator.
    pub record_log: PathBuf,
    /// `taint` (default), `delete` or `observe`.
    pub policy: Policy,
    /// Allow `delete` for trusted plain netconsole (default: only verified relay reports).
    pub netconsole_may_delete: bool,
    /// Incidents acted on concurrently.
    pub concurrency: usize,
    /// Time limit of one step execution.
    #[serde(with = "duration")]
    pub step_timeout: Duration,
    /// Longest wait between retries of a retryable step.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
}

impl Default for ActConfig {
    fn default() -> Self {
        Self {
            actuator: ActuatorKind::RecordOnly,
            record_log: PathBuf::from("/var/lib/host-bridge/actions.jsonl"),
            policy: Policy::Taint,
            netconsole_may_delete: false,
            concurrency: 64,
            step_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// `[trust]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// CIDRs whose plain netconsole is trusted (may set conditions and taint).
    pub netconsole_sources: Vec<Spanned<String>>,
}

/// `[serve]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address of the HTTP server; empty string disables it.
    pub http: Spanned<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            http: Spanned::new(0..0, "127.0.0.1:9464".into()),
        }
    }
}

/// `[[keyring]]`: one relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringEntry {
    /// Relay id as the relay puts it in its reports.
    pub relay_id: Spanned<String>,
    /// 32-byte HMAC key, hex (64 digits) or base64.
    pub key: Spanned<String>,
    /// Kubernetes Node name of the host this relay watches.
    pub node: Spanned<String>,
    /// Source addresses that belong to this node: the relay's own and the host's netconsole.
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

/// A configuration fault, with where it is.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated, typed parts of a [`Config`] that need parsing beyond serde.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// HTTP address, if enabled.
    pub http: Option<SocketAddr>,
    /// Trusted netconsole networks.
    pub trusted: Vec<Cidr>,
    /// Keyring.
    pub keyring: Vec<Relay>,
    /// Journal file.
    pub journal: PathBuf,
    /// Record-only log.
    pub record_log: PathBuf,
    /// NPD rule files.
    pub npd_rule_files: Vec<PathBuf>,
}

/// A keyring entry, parsed.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Relay id.
    pub relay_id: String,
    /// HMAC key.
    pub key: [u8; 32],
    /// Node name.
    pub node: String,
    /// Addresses of this node and its relay.
    pub addresses: Vec<IpAddr>,
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr[/prefix]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// Does the network contain `ip`? (IPv4-mapped IPv6 addresses count as IPv4.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (from a dual-stack socket) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parse a 32-byte key from hex (64 digits) or base64.
pub fn parse_key(s: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| s.get(i * 2..i * 2 + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or("bad hex")?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| "key must be 64 hex digits or base64 of 32 bytes".to_string())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("key must be 32 bytes, got {}", bytes.len()))
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<(Config, Validated), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<(Config, Validated), ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message carries its own rendering of the spot; keep its first line.
            let msg = e.message().to_owned();
            at(e.span(), msg)
        })?;
        cfg.base_dir = base_dir.to_owned();
        let sp = |s: &std::ops::Range<usize>| if s.is_empty() && s.start == 0 { None } else { Some(s.clone()) };

        let mut listen = Vec::new();
        if cfg.ingest.listen.is_empty() {
            return Err(at(None, "ingest.listen: at least one listen address is required".into()));
        }
        for l in &cfg.ingest.listen {
            let addr: SocketAddr = l.get_ref().parse().map_err(|_| {
                at(sp(&l.span()), format!("ingest.listen: `{}` is not an address:port (IPv6: `[::]:6666`)", l.get_ref()))
            })?;
            listen.push(addr);
        }
        let checks: [(&str, usize, usize, usize); 6] = [
            ("ingest.sockets_per_address", cfg.ingest.sockets_per_address, 1, 64),
            ("ingest.batch", cfg.ingest.batch, 1, 1024),
            ("ingest.max_datagram", cfg.ingest.max_datagram, 64, 65535),
            ("ingest.workers", cfg.ingest.workers, 1, 256),
            ("ingest.queue", cfg.ingest.queue, 16, 1 << 24),
            ("ingest.max_sources", cfg.ingest.max_sources, 1, 1 << 24),
        ];
        for (name, v, lo, hi) in checks {
            if v < lo || v > hi {
                return Err(at(find_key(text, name), format!("{name}: {v} is out of range {lo}..={hi}")));
            }
        }
        if cfg.act.concurrency == 0 {
            return Err(at(find_key(text, "act.concurrency"), "act.concurrency must be at least 1".into()));
        }
        let http = if cfg.serve.http.get_ref().is_empty() {
            None
        } else {
            Some(cfg.serve.http.get_ref().parse::<SocketAddr>().map_err(|_| {
                at(sp(&cfg.serve.http.span()), format!("serve.http: `{}` is not an address:port", cfg.serve.http.get_ref()))
            })?)
        };
        let mut trusted = Vec::new();
        for c in &cfg.trust.netconsole_sources {
            trusted.push(Cidr::parse(c.get_ref()).map_err(|m| at(sp(&c.span()), format!("trust.netconsole_sources: {m}")))?);
        }
        let mut keyring: Vec<Relay> = Vec::new();
        for (i, k) in cfg.keyring.iter().enumerate() {
            let id = k.relay_id.get_ref().trim();
            if id.is_empty() {
                return Err(at(sp(&k.relay_id.span()), format!("keyring[{i}].relay_id must not be empty")));
            }
            if keyring.iter().any(|r| r.relay_id == id) {
                return Err(at(sp(&k.relay_id.span()), format!("keyring[{i}].relay_id `{id}` is listed twice")));
            }
            let key = parse_key(k.key.get_ref()).map_err(|m| at(sp(&k.key.span()), format!("keyring[{i}].key: {m}")))?;
            if k.node.get_ref().trim().is_empty() {
                return Err(at(sp(&k.node.span()), format!("keyring[{i}].node must not be empty")));
            }
            let mut addresses = Vec::new();
            for a in &k.addresses {
                let ip: IpAddr = a
                    .get_ref()
                    .parse()
                    .map_err(|_| at(sp(&a.span()), format!("keyring[{i}].addresses: `{}` is not an IP address", a.get_ref())))?;
                addresses.push(canonical_ip(ip));
            }
            keyring.push(Relay {
                relay_id: id.to_owned(),
                key,
                node: k.node.get_ref().trim().to_owned(),
                addresses,
            });
        }
        let mut npd_rule_files = Vec::new();
        for f in &cfg.detect.npd_rule_files {
            let p = cfg.resolve(f.get_ref());
            if !p.is_file() {
                return Err(at(sp(&f.span()), format!("detect.npd_rule_files: {} does not exist", p.display())));
            }
            npd_rule_files.push(p);
        }
        let v = Validated {
            listen,
            http,
            trusted,
            keyring,
            journal: cfg.resolve(cfg.journal.path.get_ref()),
            record_log: cfg.resolve(&cfg.act.record_log),
            npd_rule_files,
        };
        // [kube]: checked here so that a bad value stops startup, not the first incident.
        cfg.kube.validate().map_err(|m| at(None, format!("[kube] {m}")))?;
        if let Some(kc) = cfg.kube.kubeconfig.take() {
            cfg.kube.kubeconfig = Some(cfg.resolve(&kc));
        }
        Ok((cfg, v))
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Best-effort span of `section.key = ` for numbers (serde gives no spans for plain numbers).
fn find_key(text: &str, dotted: &str) -> Option<std::ops::Range<usize>> {
    let (section, key) = dotted.split_once('.')?;
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let t = line.trim_start();
        if t.starts_with('[') {
            in_section = t.trim_end().starts_with(&header);
            continue;
        }
        if in_section && t.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
            let at = start + (line.len() - t.len());
            return Some(at..at + key.len());
        }
    }
    None
}

/// `"250ms"`, `"3s"`, `"10m"`, `"1h"` ↔ [`Duration`].
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parse a duration with a unit suffix.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 250ms, 3s, 10m, 1h"))?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => None,
        }
        .ok_or_else(|| format!("`{s}` is not a duration like 250ms, 3s, 10m, 1h"))?;
        Ok(Duration::from_millis(ms))
    }

    /// serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.99.0.0/16").unwrap();
        assert!(c.contains("10.99.3.4".parse().unwrap()));
        assert!(c.contains("::ffff:10.99.3.4".parse().unwrap()));
        assert!(!c.contains("10.98.0.1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration::parse("10m").unwrap(), Duration::from_secs(600));
        assert!(duration::parse("10 parsecs").is_err());
    }

    #[test]
    fn line_numbers() {
        let text = "[ingest]\nlisten = [\"0.0.0.0:6666\"]\nworkers = 0\n";
        let e = Config::parse(text, Path::new("c.toml"), Path::new(".")).unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        let text = "[ingest]\nlisten = [\"0.0.0.0:6666\", \"nonsense\"]\n";
        let e = Config::parse(text, Path::new("c.toml"), Path::new(".")).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("nonsense"), "{e}");
    }
}
