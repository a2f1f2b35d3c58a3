//! `cargo xtask bench`: callgrind instruction counts for relay-core.
//!
//! Instruction counts, not wall time: they are the same on a loaded 2-core CI
//! machine as on a laptop, and they are what a no_std MCU build cares about.
//!
//! Each benchmark is a `harness = false` bench binary that understands
//! `<binary> <case> <iterations>`: it sets the case up, then runs the measured
//! operation `iterations` times. The runner builds the binaries in the `bench`
//! profile (release + debug info), runs each case under
//! `valgrind --tool=callgrind` with 0 and with N iterations and reports
//! `(I(N) - I(0)) / N`: setup, process start-up and the dynamic loader cancel
//! out, no client requests or symbol names are needed, and inlining cannot
//! hide the measured code.
//!
//! To add a benchmark, add an entry to [`BENCHES`] (and, for a comparison, to
//! [`RATIOS`]); a new bench binary also needs a `[[bench]]` entry with
//! `harness = false` in its package's Cargo.toml.
use crate::util::root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One measured operation.
pub struct Bench {
    /// Short unique name, shown in the report and used by `--filter`.
    pub name: &'static str,
    /// Cargo package that holds the bench binary.
    pub package: &'static str,
    /// The `[[bench]]` target name.
    pub target: &'static str,
    /// First argument to the bench binary: which case to run.
    pub case: &'static str,
    /// Payload bytes per iteration, to report instructions per byte.
    pub bytes: Option<u64>,
    /// Goal for instructions per payload byte, if there is one.
    pub max_per_byte: Option<f64>,
    /// What one iteration does, for the report.
    pub what: &'static str,
}

/// A comparison of two benchmarks: `numerator / denominator`, with a goal.
pub struct Ratio {
    /// Name of the benchmark on top.
    pub numerator: &'static str,
    /// Name of the benchmark below.
    pub denominator: &'static str,
    /// The ratio must not exceed this to meet the goal.
    pub at_most: f64,
}

/// Size of tests/fixtures/netconsole/ext-panic.serial.log (pinned by SHA256SUMS),
/// the input of the `scan-*` benchmarks.
const SERIAL_LOG_BYTES: u64 = 31_083;

/// Every benchmark `cargo xtask bench` knows about.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "frame-write",
        package: "relay-core",
        target: "frame_callgrind",
        case: "frame-write",
        bytes: Some(1000),
        max_per_byte: Some(1.5),
        what: "FrameTemplate::write: one 1000-byte UDP/IPv4 datagram into an Ethernet frame",
    },
    Bench {
        name: "frame-write-parts",
        package: "relay-core",
        target: "frame_callgrind",
        case: "frame-write-parts",
        bytes: Some(1000),
        max_per_byte: Some(1.5),
        what: "FrameTemplate::write_parts: the same payload as a 61-byte head + 939-byte body",
    },
    Bench {
        name: "smoltcp-udp",
        package: "relay-core",
        target: "frame_callgrind",
        case: "smoltcp-udp",
        bytes: Some(1000),
        max_per_byte: None,
        what: "smoltcp 0.12 udp::Socket::send_slice + Interface::poll, same datagram, in-memory device",
    },
    Bench {
        name: "scan-bytes",
        package: "relay-core",
        target: "scan_callgrind",
        case: "scan-bytes",
        bytes: Some(SERIAL_LOG_BYTES),
        max_per_byte: Some(20.0),
        what: "console scanner + context ring + detector over ext-panic.serial.log, push_byte per byte",
    },
    Bench {
        name: "scan-64",
        package: "relay-core",
        target: "scan_callgrind",
        case: "scan-64",
        bytes: Some(SERIAL_LOG_BYTES),
        max_per_byte: Some(20.0),
        what: "console scanner + context ring + detector over ext-panic.serial.log, 64-byte chunks",
    },
    Bench {
        name: "scan-4096",
        package: "relay-core",
        target: "scan_callgrind",
        case: "scan-4096",
        bytes: Some(SERIAL_LOG_BYTES),
        max_per_byte: Some(20.0),
        what: "console scanner + context ring + detector over ext-panic.serial.log, 4 KiB chunks",
    },
    Bench {
        name: "relay-clone",
        package: "relay-core",
        target: "relay_callgrind",
        case: "relay-clone",
        bytes: None,
        max_per_byte: None,
        what: "Relay::clone of a relay primed with the real serial log (subtract from the two below)",
    },
    Bench {
        name: "relay-panic-to-frame",
        package: "relay-core",
        target: "relay_callgrind",
        case: "relay-panic-to-frame",
        bytes: None,
        max_per_byte: None,
        what: "clone + the panic line's last byte to the first frame ready (the panic line as netconsole)",
    },
    Bench {
        name: "relay-panic-to-report",
        package: "relay-core",
        target: "relay_callgrind",
        case: "relay-panic-to-report",
        bytes: None,
        max_per_byte: None,
        what: "clone + the panic line's last byte to the signed report's frame (second frame)",
    },
    Bench {
        name: "nc-encode",
        package: "relay-core",
        target: "netconsole_callgrind",
        case: "nc-encode",
        bytes: Some(999),
        max_per_byte: None,
        what: "ExtRecord::datagrams: a 980-byte printk record into its one extended datagram",
    },
    Bench {
        name: "nc-encode-frag",
        package: "relay-core",
        target: "netconsole_callgrind",
        case: "nc-encode-frag",
        bytes: Some(2602),
        max_per_byte: None,
        what: "ExtRecord::datagrams: a 2500-byte record into its three ncfrag fragments",
    },
    Bench {
        name: "nc-encode-escapes",
        package: "relay-core",
        target: "netconsole_callgrind",
        case: "nc-encode-escapes",
        bytes: Some(1341),
        max_per_byte: None,
        what: "ExtRecord::datagrams: 980 bytes with a tab every ten (\\x09) into two fragments",
    },
    Bench {
        name: "nc-decode",
        package: "relay-core",
        target: "netconsole_callgrind",
        case: "nc-decode",
        bytes: Some(999),
        max_per_byte: None,
        what: "ExtRepr::parse of the 999-byte extended datagram",
    },
    Bench {
        name: "nc-reassemble",
        package: "relay-core",
        target: "netconsole_callgrind",
        case: "nc-reassemble",
        bytes: Some(2602),
        max_per_byte: None,
        what: "ExtRepr::parse + Reassembler::push of the three fragments",
    },
];

/// Comparisons `cargo xtask bench` reports.
pub const RATIOS: &[Ratio] = &[Ratio {
    numerator: "frame-write",
    denominator: "smoltcp-udp",
    at_most: 1.0 / 3.0,
}];

/// Options of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Only run benchmarks whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Iterations of the measured operation per callgrind run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Print the results as a Markdown table (for the README).
    #[arg(long)]
    pub markdown: bool,
    /// Exit with an error when a goal is missed.
    #[arg(long)]
    pub enforce: bool,
}

/// One benchmark's result.
struct Measured {
    bench: &'static Bench,
    per_iter: f64,
}

/// Build the bench binaries, measure every selected benchmark, print the report.
pub fn run(a: Args) -> Result<()> {
    let selected: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| a.filter.as_deref().is_none_or(|f| b.name.contains(f)))
        .collect();
    if selected.is_empty() {
        bail!("no benchmark matches {:?}; known: {}", a.filter, names());
    }
    check_valgrind()?;

    let mut binaries: BTreeMap<(&str, &str), PathBuf> = BTreeMap::new();
    for b in &selected {
        if let std::collections::btree_map::Entry::Vacant(e) = binaries.entry((b.package, b.target))
        {
            e.insert(build(b.package, b.target)?);
        }
    }

    let out_dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut results = Vec::new();
    for b in &selected {
        let exe = &binaries[&(b.package, b.target)];
        let base = callgrind(exe, b, 0, &out_dir)?;
        let total = callgrind(exe, b, a.iterations, &out_dir)?;
        if total < base {
            bail!(
                "{}: {} iterations counted fewer instructions than none",
                b.name,
                a.iterations
            );
        }
        let per_iter = (total - base) as f64 / a.iterations as f64;
        eprintln!(
            "xtask bench: {}: {:.0} instructions per iteration",
            b.name, per_iter
        );
        results.push(Measured { bench: b, per_iter });
    }
    let _ = std::fs::remove_dir_all(&out_dir);

    let missed = report(&results, a.markdown);
    if a.enforce && !missed.is_empty() {
        bail!("goals missed: {}", missed.join("; "));
    }
    Ok(())
}

fn names() -> String {
    BENCHES
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_valgrind() -> Result<()> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => {
            bail!("valgrind is not installed: `apt-get install valgrind` (or `cargo xtask setup`)")
        }
    }
}

/// `cargo bench --no-run` for one target; returns the executable cargo reports.
fn build(package: &str, target: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).args([
        "bench",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "-p",
        package,
        "--bench",
        target,
    ]);
    eprintln!("xtask: $ {cmd:?}");
    let out = cmd.output().context("could not start cargo")?;
    if !out.status.success() {
        bail!("building bench {package}/{target} failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| {
            l.contains(r#""reason":"compiler-artifact""#)
                && l.contains(&format!(r#""name":"{target}""#))
        })
        .find_map(json_executable)
        .map(PathBuf::from)
        .with_context(|| format!("cargo did not report an executable for bench {package}/{target}"))
}

/// The `"executable"` string of one cargo JSON message (paths need no unescaping
/// beyond `\\` and `\"`).
fn json_executable(line: &str) -> Option<String> {
    let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Run one case under callgrind and return the total instruction count.
fn callgrind(exe: &Path, b: &Bench, iterations: u64, out_dir: &Path) -> Result<u64> {
    let out_file = out_dir.join(format!("{}.{iterations}.callgrind", b.name));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .arg(b.case)
        .arg(iterations.to_string())
        .output()
        .context("could not start valgrind")?;
    if !out.status.success() {
        bail!(
            "{} ({} iterations) failed under callgrind: {}\n{}",
            b.name,
            iterations,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("read {}", out_file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no instruction total in {}", out_file.display()))
}

/// Print the table and the ratios; returns the goals that were missed.
fn report(results: &[Measured], markdown: bool) -> Vec<String> {
    let mut missed = Vec::new();
    if markdown {
        println!(
            "| benchmark | what one iteration does | instructions | per payload byte | goal |"
        );
        println!("|---|---|---:|---:|---|");
    } else {
        println!(
            "{:<18} {:>12} {:>9}  {:<20} what",
            "benchmark", "instructions", "per byte", "goal"
        );
    }
    for m in results {
        let per_byte = m.bench.bytes.map(|n| m.per_iter / n as f64);
        let goal = match (per_byte, m.bench.max_per_byte) {
            (Some(pb), Some(max)) => {
                let ok = pb <= max;
                if !ok {
                    missed.push(format!(
                        "{}: {pb:.2} instructions/byte > {max}",
                        m.bench.name
                    ));
                }
                format!("≤ {max}/byte: {}", if ok { "met" } else { "MISSED" })
            }
            _ => String::new(),
        };
        let pb = per_byte.map(|v| format!("{v:.2}")).unwrap_or_default();
        if markdown {
            println!(
                "| `{}` | {} | {:.0} | {} | {} |",
                m.bench.name, m.bench.what, m.per_iter, pb, goal
            );
        } else {
            println!(
                "{:<18} {:>12.0} {:>9}  {:<20} {}",
                m.bench.name, m.per_iter, pb, goal, m.bench.what
            );
        }
    }
    let by_name: BTreeMap<&str, f64> = results.iter().map(|m| (m.bench.name, m.per_iter)).collect();
    for r in RATIOS {
        let (Some(&n), Some(&d)) = (by_name.get(r.numerator), by_name.get(r.denominator)) else {
            continue; // one side was filtered out
        };
        let ratio = n / d;
        let ok = ratio <= r.at_most;
        if !ok {
            missed.push(format!(
                "{} / {} = {ratio:.3} > {:.3}",
                r.numerator, r.denominator, r.at_most
            ));
        }
        let line = format!(
            "ratio {} / {} = {ratio:.3} (goal ≤ {:.3}: {})",
            r.numerator,
            r.denominator,
            r.at_most,
            if ok { "met" } else { "MISSED" }
        );
        if markdown {
            println!("\n{line}");
        } else {
            println!("{line}");
        }
    }
    missed
}
