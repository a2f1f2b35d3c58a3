//! `host-bridge`: the lastgasp daemon and its tools.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use host_bridge::journal::{Entry, Journal, StepState};
use host_bridge::serve::config::Config;

/// lastgasp host-bridge: turns last-gasp netconsole and signed relay reports into incidents
/// and Kubernetes facts.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info,host_bridge=debug`.
    #[arg(long, env = "HOST_BRIDGE_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (systemd Type=notify aware).
    Run {
        /// Config file.
        #[arg(short, long, default_value = "/etc/lastgasp/host-bridge.toml")]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero with `file:line:col: message` on a fault).
    CheckConfig {
        /// Config file.
        #[arg(short, long, default_value = "/etc/lastgasp/host-bridge.toml")]
        config: PathBuf,
    },
    /// Send a capture (.jsonl or .pcap) over UDP to a running bridge.
    Replay {
        /// Capture file.
        capture: PathBuf,
        /// Destination address.
        #[arg(long, default_value = "127.0.0.1:6666")]
        to: SocketAddr,
        /// Rewrite captured destination ports: `6666=7666,6667=7667` (default: all to --to's port).
        #[arg(long, value_parser = parse_port_map)]
        port_map: Option<HashMap<u16, u16>>,
        /// Keep the capture's timing, at this speed factor (1 = real time).
        #[arg(long, conflicts_with = "fast")]
        speed: Option<f64>,
        /// As fast as possible (the default when --speed is not given).
        #[arg(long)]
        fast: bool,
        /// Only datagrams captured to these destination ports.
        #[arg(long, value_delimiter = ',')]
        only_dport: Vec<u16>,
    },
    /// Read the incident journal.
    Incidents {
        #[command(subcommand)]
        cmd: IncidentsCmd,
        /// Journal file (default: the one in --config).
        #[arg(long, global = true)]
        journal: Option<PathBuf>,
        /// Config file naming the journal.
        #[arg(short, long, global = true, default_value = "/etc/lastgasp/host-bridge.toml")]
        config: PathBuf,
        /// Ask a running bridge instead (its `serve.http` address), e.g. http://127.0.0.1:9464.
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// Generate a relay key and its keyring entry.
    Keygen {
        /// Relay id (as configured on the relay).
        #[arg(long)]
        relay_id: String,
        /// Kubernetes Node name of the host the relay watches.
        #[arg(long)]
        node: String,
        /// Source addresses of the relay and the host's netconsole.
        #[arg(long, value_delimiter = ',')]
        address: Vec<String>,
    },
}

#[derive(Subcommand)]
enum IncidentsCmd {
    /// One line per incident.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One incident in full.
    Show {
        /// Incident id.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_port_map(s: &str) -> Result<HashMap<u16, u16>, String> {
    s.split(',')
        .map(|kv| {
            let (a, b) = kv.split_once('=').ok_or_else(|| format!("`{kv}`: expected FROM=TO"))?;
            Ok((a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?, b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?))
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match real_main(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("host-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run { config } => {
            let (cfg, v) = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("host-bridge: invalid config: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bridge").build()?;
            rt.block_on(host_bridge::serve::run(cfg, v))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { config } => match Config::load(&config) {
            Ok((cfg, v)) => {
                host_bridge::detect::NpdRules::load(&v.npd_rule_files)?;
                println!(
                    "{}: ok ({} listen address(es), {} relay key(s), {} NPD rule file(s), actuator {:?}, policy {:?})",
                    config.display(),
                    v.listen.len(),
                    v.keyring.len(),
                    v.npd_rule_files.len(),
                    cfg.act.actuator,
                    cfg.act.policy
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Cmd::Replay {
            capture,
            to,
            port_map,
            speed,
            fast: _,
            only_dport,
        } => {
            let caps = host_bridge::replay::load(&capture)?;
            let n = host_bridge::replay::send(
                &caps,
                &host_bridge::replay::ReplayOptions {
                    to,
                    port_map: port_map.unwrap_or_default(),
                    speed,
                    only_dports: only_dport,
                },
            )?;
            println!("sent {n} datagrams to {to}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Incidents { cmd, journal, config, url } => {
            let entries: Vec<Entry> = match (&url, &cmd) {
                (Some(url), IncidentsCmd::Show { id, .. }) => vec![serde_json::from_slice(&http_get(url, &format!("/incidents/{id}"))?)?],
                (Some(url), IncidentsCmd::List { .. }) => serde_json::from_slice(&http_get(url, "/incidents")?)?,
                (None, _) => {
                    let path = match journal {
                        Some(p) => p,
                        None => Config::load(&config).map_err(|e| anyhow::anyhow!("{e} (or pass --journal)"))?.1.journal,
                    };
                    let j = Journal::open(&path)?;
                    match &cmd {
                        IncidentsCmd::Show { id, .. } => vec![j.get(*id)?],
                        IncidentsCmd::List { .. } => j.list()?,
                    }
                }
            };
            let mut out = std::io::stdout().lock();
            match cmd {
                IncidentsCmd::List { json: true } | IncidentsCmd::Show { json: true, .. } => {
                    serde_json::to_writer_pretty(&mut out, &entries)?;
                    writeln!(out)?;
                }
                IncidentsCmd::List { json: false } => {
                    for e in &entries {
                        let i = &e.incident;
                        let done = e.steps.iter().filter(|s| s.state != StepState::Pending).count();
                        writeln!(
                            out,
                            "{:>5}  {:<22} {:<20} {:<10} {}/{} steps  repeats {}  {}",
                            i.id,
                            i.key.node,
                            i.reason,
                            format!("{:?}", i.certainty),
                            done,
                            e.steps.len(),
                            i.repeats,
                            i.trigger_line
                        )?;
                    }
                }
                IncidentsCmd::Show { json: false, .. } => {
                    for e in &entries {
                        show(&mut out, e)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen { relay_id, node, address } => {
            let key = host_bridge::keygen::new_key()?;
            println!("# relay side (relay id and key):\n#   relay_id = \"{relay_id}\"\n#   key = \"{}\"", host_bridge::keygen::hex(&key));
            println!("# bridge side (append to host-bridge.toml):");
            print!("{}", host_bridge::keygen::keyring_entry(&relay_id, &node, &address, &key));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(out: &mut impl Write, e: &Entry) -> std::io::Result<()> {
    let i = &e.incident;
    writeln!(out, "incident {}  {}  boot {}", i.id, i.key.node, i.key.boot)?;
    writeln!(out, "  reason     {} ({:?}, {:?}, trusted: {})", i.reason, i.severity, i.certainty, i.trusted)?;
    writeln!(out, "  origin     {:?}", i.origin)?;
    writeln!(out, "  source     {:?}  relay {:?}  keyring node {:?}", i.hint.source, i.hint.relay_id, i.hint.keyring_node)?;
    writeln!(out, "  trigger    {}", i.trigger_line)?;
    writeln!(out, "  repeats    {}", i.repeats)?;
    writeln!(out, "  before:")?;
    for l in &i.context_before {
        writeln!(out, "    | {l}")?;
    }
    writeln!(out, "  after:")?;
    for l in &i.context_after {
        writeln!(out, "    | {l}")?;
    }
    writeln!(out, "  steps:")?;
    for (n, s) in e.steps.iter().enumerate() {
        writeln!(out, "    {n}. {:?}  {:?}  attempts {}", s.step, s.state, s.attempts)?;
    }
    Ok(())
}

/// Minimal HTTP/1.0 GET (the bridge's own endpoints only).
fn http_get(url: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(resp.get(..split).unwrap_or_default()).into_owned();
    let body = resp.get(split + 4..).unwrap_or_default().to_vec();
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("{}: {}", head.lines().next().unwrap_or_default(), String::from_utf8_lossy(&body).trim());
    }
    Ok(body)
}
