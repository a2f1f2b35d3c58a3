//! The relay's TOML configuration: parsed, then validated before anything
//! starts, every fault reported with the line and column where it sits.
//!
//! See `contrib/relay.toml` for a commented example.
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The default obmc-console id: current obmc-console names its socket
/// `obmc-console.<console-id>` and uses `default` when none is configured.
pub const DEFAULT_CONSOLE_ID: &str = "default";

/// A configuration fault, located in the file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the fault is in (`<memory>` when parsed from a string).
    pub file: PathBuf,
    /// 1-based line, when the fault has a place.
    pub line: Option<usize>,
    /// 1-based column, when the fault has a place.
    pub column: Option<usize>,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
            _ => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// `relay-id`, node name, key and state: who this relay is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    id: Spanned<String>,
    node_name: Spanned<String>,
    key_file: Spanned<PathBuf>,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lastgasp-relay")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    console_id: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    tty: Option<Spanned<PathBuf>>,
    baud: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    interface: Spanned<String>,
    #[serde(default)]
    transport: Transport,
    source_ip: Option<Spanned<IpAddr>>,
    #[serde(default = "default_source_port")]
    source_port: u16,
    mtu: Option<Spanned<u16>>,
    vlan: Option<Spanned<RawVlan>>,
    #[serde(default = "default_refresh")]
    neighbour_refresh_secs: Spanned<u64>,
}

fn default_source_port() -> u16 {
    6665
}

fn default_refresh() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVlan {
    id: u16,
    #[serde(default)]
    pcp: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    address: Spanned<SocketAddr>,
    mac: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignals {
    #[serde(default)]
    dbus: bool,
    #[serde(default = "default_host_instance")]
    host_instance: u32,
}

fn default_host_instance() -> u32 {
    0
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTuning {
    mirror: Option<bool>,
    mirror_lines_per_sec: Option<Spanned<u32>>,
    mirror_burst: Option<Spanned<u32>>,
    report_copies: Option<Spanned<u8>>,
    after_lines: Option<u16>,
    silence_ms: Option<Spanned<u64>>,
}

/// Relay behaviour knobs; `None` keeps relay-core's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Mirror every console line as netconsole (rate-limited).
    pub mirror: Option<bool>,
    /// Mirror rate, lines per second.
    pub mirror_lines_per_sec: Option<u32>,
    /// Mirror burst, lines.
    pub mirror_burst: Option<u32>,
    /// Copies of each report.
    pub report_copies: Option<u8>,
    /// Lines forwarded at full speed after a trigger.
    pub after_lines: Option<u16>,
    /// Console silence that confirms a suspected panic.
    pub silence: Option<std::time::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    relay: RawRelay,
    #[serde(default)]
    console: RawConsole,
    network: RawNetwork,
    #[serde(rename = "collector")]
    collectors: Option<Spanned<Vec<RawCollector>>>,
    #[serde(default)]
    signals: RawSignals,
    #[serde(default)]
    tuning: RawTuning,
}

/// Where the host's console comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleSource {
    /// obmc-console-server's abstract Unix socket; the name is without the
    /// leading NUL (`obmc-console.default`, or the legacy `obmc-console`).
    ObmcConsole {
        /// Abstract socket name.
        name: String,
    },
    /// A tty or pty device read directly (raw mode is set on open).
    Tty {
        /// Device path.
        path: PathBuf,
        /// Line speed to set; `None` keeps the device's (always so for a pty).
        baud: Option<u32>,
    },
}

/// How frames leave the BMC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// AF_PACKET: relay-core's prebuilt frames go to the NIC as they are
    /// (netpoll's way: no routing, no ARP at panic time). Needs CAP_NET_RAW.
    #[default]
    Packet,
    /// A plain UDP socket: the frame's UDP payload is sent through the kernel's
    /// stack. The fallback where raw sockets are not allowed.
    Udp,
}

/// An 802.1Q tag to put on every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// VLAN id, 1..=4094.
    pub id: u16,
    /// Priority code point, 0..=7.
    pub pcp: u8,
}

/// One collector (a host-bridge instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collector {
    /// Its UDP address.
    pub address: SocketAddr,
    /// A pinned next-hop MAC; `None` learns it from the kernel's neighbour table.
    pub mac: Option<[u8; 6]>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Relay id, as the bridge's keyring knows it.
    pub relay_id: String,
    /// The Kubernetes node this BMC's host is.
    pub node_name: String,
    /// File with the 32-byte report key (64 hex digits, or 32 raw bytes).
    pub key_file: PathBuf,
    /// Directory for the persistent boot counter.
    pub state_dir: PathBuf,
    /// Console input.
    pub console: ConsoleSource,
    /// Network interface the frames leave by.
    pub interface: String,
    /// Frame transport.
    pub transport: Transport,
    /// Source IP; `None` asks the kernel's routing table once at start.
    pub source_ip: Option<IpAddr>,
    /// UDP source port (netconsole's default is 6665).
    pub source_port: u16,
    /// MTU; `None` reads the interface's.
    pub mtu: Option<u16>,
    /// Optional 802.1Q tag.
    pub vlan: Option<Vlan>,
    /// How often the collectors' MACs are re-read from the neighbour table.
    pub neighbour_refresh: std::time::Duration,
    /// Primary first, then secondaries.
    pub collectors: Vec<Collector>,
    /// Read host signals from OpenBMC's D-Bus.
    pub dbus_signals: bool,
    /// Which host (`host0`, `chassis0`, `watchdog/host0`) to watch on D-Bus.
    pub host_instance: u32,
    /// Relay behaviour knobs.
    pub tuning: Tuning,
}

/// Largest number of collectors (relay-core keeps a fixed-size table).
pub const MAX_COLLECTORS: usize = 4;

/// Parse a MAC written as six `:`- or `-`-separated hex octets.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(r) if r.end > 0 => {
                let before = self.text.get(..r.start).unwrap_or(self.text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (Some(line), Some(column))
            }
            _ => (None, None),
        };
        ConfigError { file: self.file.to_path_buf(), line, column, message: message.into() }
    }
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validate configuration text; `file` only names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let loc = Locator { file, text };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| loc.at(e.span(), e.message().trim_end().to_string()))?;

        let relay_id = raw.relay.id.get_ref().clone();
        if relay_id.is_empty() || relay_id.len() > 64 || !relay_id.is_ascii() {
            return Err(loc.at(Some(raw.relay.id.span()), "relay.id must be 1..=64 ASCII characters"));
        }
        let node_name = raw.relay.node_name.get_ref().clone();
        if node_name.is_empty() || node_name.len() > 253 {
            return Err(loc.at(Some(raw.relay.node_name.span()), "relay.node_name must be 1..=253 characters (a Kubernetes node name)"));
        }
        if raw.relay.key_file.get_ref().as_os_str().is_empty() {
            return Err(loc.at(Some(raw.relay.key_file.span()), "relay.key_file is empty"));
        }

        let console = validate_console(&loc, raw.console)?;

        let net = raw.network;
        let interface = net.interface.get_ref().clone();
        if interface.is_empty() || interface.len() >= libc::IFNAMSIZ || interface.contains('/') {
            return Err(loc.at(Some(net.interface.span()), format!("network.interface {interface:?} is not an interface name")));
        }
        let mtu = match net.mtu {
            Some(m) if !(576..=9000).contains(m.get_ref()) => {
                return Err(loc.at(Some(m.span()), "network.mtu must be within 576..=9000"))
            }
            m => m.map(Spanned::into_inner),
        };
        let vlan = match net.vlan {
            Some(v) => {
                let span = v.span();
                let v = v.into_inner();
                if !(1..=4094).contains(&v.id) || v.pcp > 7 {
                    return Err(loc.at(Some(span), "network.vlan needs id within 1..=4094 and pcp within 0..=7"));
                }
                Some(Vlan { id: v.id, pcp: v.pcp })
            }
            None => None,
        };
        let refresh = *net.neighbour_refresh_secs.get_ref();
        if !(1..=3600).contains(&refresh) {
            return Err(loc.at(Some(net.neighbour_refresh_secs.span()), "network.neighbour_refresh_secs must be within 1..=3600"));
        }

        let collectors_span = raw.collectors.as_ref().map(Spanned::span);
        let raw_collectors = raw.collectors.map(Spanned::into_inner).unwrap_or_default();
        if raw_collectors.is_empty() {
            return Err(loc.at(None, "no [[collector]]: the relay needs at least one address to send to"));
        }
        if raw_collectors.len() > MAX_COLLECTORS {
            return Err(loc.at(collectors_span, format!("at most {MAX_COLLECTORS} [[collector]] entries")));
        }
        let source_ip = net.source_ip.as_ref().map(|s| *s.get_ref());
        let mut collectors = Vec::with_capacity(raw_collectors.len());
        for c in raw_collectors {
            let address = *c.address.get_ref();
            if address.port() == 0 || address.ip().is_unspecified() || address.ip().is_multicast() {
                return Err(loc.at(Some(c.address.span()), "collector.address must be a unicast address with a port"));
            }
            if let Some(src) = &net.source_ip {
                if src.get_ref().is_ipv4() != address.is_ipv4() {
                    return Err(loc.at(Some(c.address.span()), "collector.address and network.source_ip must be the same IP family"));
                }
            }
            if let Some(first) = collectors.first() {
                let first: &Collector = first;
                if first.address.is_ipv4() != address.is_ipv4() {
                    return Err(loc.at(Some(c.address.span()), "all collectors must share one IP family (one frame template source)"));
                }
            }
            let mac = match &c.mac {
                Some(m) => Some(parse_mac(m.get_ref()).ok_or_else(|| {
                    loc.at(Some(m.span()), format!("collector.mac {:?} is not a MAC (aa:bb:cc:dd:ee:ff)", m.get_ref()))
                })?),
                None => None,
            };
            collectors.push(Collector { address, mac });
        }

        let tuning = validate_tuning(&loc, raw.tuning)?;

        Ok(Config {
            tuning,
            relay_id,
            node_name,
            key_file: raw.relay.key_file.into_inner(),
            state_dir: raw.relay.state_dir,
            console,
            interface,
            transport: net.transport,
            source_ip,
            source_port: net.source_port,
            mtu,
            vlan,
            neighbour_refresh: std::time::Duration::from_secs(refresh),
            collectors,
            dbus_signals: raw.signals.dbus,
            host_instance: raw.signals.host_instance,
        })
    }
}

fn validate_tuning(loc: &Locator<'_>, t: RawTuning) -> Result<Tuning, ConfigError> {
    let at_least_one = |v: &Option<Spanned<u32>>, name: &str| match v {
        Some(v) if *v.get_ref() == 0 => Err(loc.at(Some(v.span()), format!("tuning.{name} must be at least 1"))),
        v => Ok(v.as_ref().map(|v| *v.get_ref())),
    };
    let mirror_lines_per_sec = at_least_one(&t.mirror_lines_per_sec, "mirror_lines_per_sec")?;
    let mirror_burst = at_least_one(&t.mirror_burst, "mirror_burst")?;
    let report_copies = match t.report_copies {
        Some(c) if *c.get_ref() == 0 => return Err(loc.at(Some(c.span()), "tuning.report_copies must be at least 1")),
        c => c.map(Spanned::into_inner),
    };
    let silence = match t.silence_ms {
        Some(s) if !(100..=60_000).contains(s.get_ref()) => {
            return Err(loc.at(Some(s.span()), "tuning.silence_ms must be within 100..=60000"))
        }
        s => s.map(|s| std::time::Duration::from_millis(s.into_inner())),
    };
    Ok(Tuning { mirror: t.mirror, mirror_lines_per_sec, mirror_burst, report_copies, after_lines: t.after_lines, silence })
}

fn validate_console(loc: &Locator<'_>, c: RawConsole) -> Result<ConsoleSource, ConfigError> {
    let given = [c.console_id.is_some(), c.socket.is_some(), c.tty.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        let span = c.tty.as_ref().map(Spanned::span).or(c.socket.as_ref().map(Spanned::span));
        return Err(loc.at(span, "console: give only one of console_id, socket or tty"));
    }
    if let (Some(b), None) = (&c.baud, &c.tty) {
        return Err(loc.at(Some(b.span()), "console.baud applies only to console.tty"));
    }
    if let Some(tty) = c.tty {
        let baud = match c.baud {
            Some(b) if crate::console::baud_constant(*b.get_ref()).is_none() => {
                return Err(loc.at(Some(b.span()), format!("console.baud {} is not a standard line speed", b.get_ref())))
            }
            b => b.map(Spanned::into_inner),
        };
        if !tty.get_ref().is_absolute() {
            return Err(loc.at(Some(tty.span()), "console.tty must be an absolute path"));
        }
        return Ok(ConsoleSource::Tty { path: tty.into_inner(), baud });
    }
    let name = match (c.socket, c.console_id) {
        (Some(s), _) => s,
        (None, Some(id)) => {
            let span = id.span();
            Spanned::new(span, format!("obmc-console.{}", id.get_ref()))
        }
        (None, None) => Spanned::new(0..0, format!("obmc-console.{DEFAULT_CONSOLE_ID}")),
    };
    // sun_path is 108 bytes and the abstract name starts after its NUL.
    if name.get_ref().is_empty() || name.get_ref().len() > 107 || name.get_ref().contains('\0') {
        return Err(loc.at(Some(name.span()), "console socket name must be 1..=107 bytes without NUL"));
    }
    Ok(ConsoleSource::ObmcConsole { name: name.into_inner() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[relay]
id = "bmc-r1-n07"
node_name = "r1-n07"
key_file = "/etc/lastgasp/relay.key"

[network]
interface = "eth0"

[[collector]]
address = "10.0.0.5:6666"

[[collector]]
address = "10.0.1.5:6666"
mac = "02:00:00:00:01:05"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("relay.toml"), s)
    }

    #[test]
    fn minimal_config_gets_defaults() -> Result<(), ConfigError> {
        let c = parse(GOOD)?;
        assert_eq!(c.console, ConsoleSource::ObmcConsole { name: "obmc-console.default".into() });
        assert_eq!(c.transport, Transport::Packet);
        assert_eq!(c.source_port, 6665);
        assert_eq!(c.collectors.len(), 2);
        assert_eq!(c.collectors[1].mac, Some([2, 0, 0, 0, 1, 5]));
        assert_eq!(c.neighbour_refresh, std::time::Duration::from_secs(30));
        assert_eq!(c.tuning, Tuning::default());
        Ok(())
    }

    #[test]
    fn the_example_in_contrib_is_valid() -> Result<(), ConfigError> {
        let text = include_str!("../contrib/relay.toml");
        parse(text).map(|_| ())
    }

    fn err_at(s: &str) -> (Option<usize>, String) {
        match parse(s) {
            Ok(_) => panic!("accepted a bad config:\n{s}"),
            Err(e) => (e.line, e.to_string()),
        }
    }

    #[test]
    fn bad_values_are_reported_at_their_line() {
        let bad_addr = GOOD.replace("10.0.1.5:6666", "10.0.1.5");
        assert_eq!(err_at(&bad_addr).0, Some(14));
        let bad_mac = GOOD.replace("02:00:00:00:01:05", "02:00:00:00:01");
        let (line, msg) = err_at(&bad_mac);
        assert_eq!(line, Some(15));
        assert!(msg.starts_with("relay.toml:15:7: collector.mac"), "{msg}");
        let unknown = GOOD.replace("interface = \"eth0\"", "interface = \"eth0\"\nspeed = 3");
        let (line, msg) = err_at(&unknown);
        assert_eq!(line, Some(9));
        assert!(msg.contains("speed"), "{msg}");
        let two_consoles = format!("{GOOD}\n[console]\nsocket = \"obmc-console\"\ntty = \"/dev/ttyS2\"\n");
        assert_eq!(err_at(&two_consoles).0, Some(19));
        let baud = format!("{GOOD}\n[console]\ntty = \"/dev/ttyS2\"\nbaud = 12345\n");
        assert_eq!(err_at(&baud).0, Some(19));
        let copies = format!("{GOOD}\n[tuning]\nmirror = false\nreport_copies = 0\n");
        assert_eq!(err_at(&copies).0, Some(19));
        let mixed = GOOD.replace("10.0.1.5:6666", "[fd00::5]:6666");
        assert_eq!(err_at(&mixed).0, Some(14));
    }

    #[test]
    fn a_config_without_collectors_is_refused() {
        let none = GOOD.split("[[collector]]").next().unwrap_or_default().to_string();
        assert!(err_at(&none).1.contains("no [[collector]]"));
    }

    #[test]
    fn console_choices() -> Result<(), ConfigError> {
        let id = parse(&format!("{GOOD}\n[console]\nconsole_id = \"host0\"\n"))?;
        assert_eq!(id.console, ConsoleSource::ObmcConsole { name: "obmc-console.host0".into() });
        let legacy = parse(&format!("{GOOD}\n[console]\nsocket = \"obmc-console\"\n"))?;
        assert_eq!(legacy.console, ConsoleSource::ObmcConsole { name: "obmc-console".into() });
        let tty = parse(&format!("{GOOD}\n[console]\ntty = \"/dev/ttyS2\"\nbaud = 115200\n"))?;
        assert_eq!(tty.console, ConsoleSource::Tty { path: "/dev/ttyS2".into(), baud: Some(115200) });
        Ok(())
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:5e:10:00:0a"), Some([2, 0, 0x5e, 0x10, 0, 0xa]));
        assert_eq!(parse_mac("02-00-5E-10-00-0A"), Some([2, 0, 0x5e, 0x10, 0, 0xa]));
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:0a:01"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:zz"), None);
        assert_eq!(parse_mac("002:00:5e:10:00:0a"), None);
    }
}
