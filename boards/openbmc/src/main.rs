//! `lastgasp-bmc-relay`: the lastgasp relay for BMCs running OpenBMC.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Watch the host's serial console from the BMC and, when the host's kernel
/// panics (or its power or watchdog says it died), send last-gasp
/// netconsole frames and a signed report to lastgasp's host-bridge.
///
/// The console comes from obmc-console-server's socket (@obmc-console.<id>)
/// or a tty. Frames are prebuilt (Ethernet/IP/UDP header resolved in
/// advance) and leave through an AF_PACKET socket on the BMC's NIC, with a
/// plain UDP socket as the fallback.
#[derive(Parser)]
#[command(name = "lastgasp-bmc-relay", version, about, long_about)]
struct Cli {
    /// Configuration file (see contrib/relay.toml).
    #[arg(short, long, global = true, default_value = "/etc/lastgasp/relay.toml")]
    config: PathBuf,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "LASTGASP_LOG", default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay until SIGTERM.
    Run {
        /// Journal every call into relay-core to this file (for tests that
        /// replay it and compare frames byte for byte).
        #[arg(long, hide = true)]
        record: Option<PathBuf>,
    },
    /// Validate the configuration, the key, the interface and the
    /// collectors' routes and MACs, print the plan, and exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.cmd {
        Cmd::Run { record } => lastgasp_openbmc::app::run(lastgasp_openbmc::app::RunOptions { config: cli.config, record }),
        Cmd::CheckConfig => lastgasp_openbmc::app::check_config(&cli.config).map(|s| print!("{s}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("lastgasp-bmc-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
