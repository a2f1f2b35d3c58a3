//! `lastgasp-apiserver`: the tests' in-process Kubernetes API server as a
//! program, for trying host-bridge, or the demo's real-cluster path
//! (`KUBECONFIG`), on a machine without a cluster. It keeps objects in
//! memory and copies the apiserver behaviour the suite relies on (admission
//! taint on new Nodes, merge-patch semantics, graceful Pod deletion, status
//! subresource, 409 on resourceVersion conflicts).
use std::path::PathBuf;

use clap::Parser;
use lastgasp_tests::apiserver::ApiServer;

/// Serves an in-memory Kubernetes API on loopback until interrupted, and
/// writes a kubeconfig that points at it.
#[derive(Parser)]
#[command(name = "lastgasp-apiserver", version)]
struct Args {
    /// Where to write the kubeconfig.
    #[arg(long, value_name = "FILE", default_value = "lastgasp-apiserver.kubeconfig")]
    kubeconfig: PathBuf,
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lastgasp-apiserver: tokio: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let server = match ApiServer::start().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lastgasp-apiserver: cannot listen: {e}");
                std::process::exit(1);
            }
        };
        if let Err(e) = std::fs::write(&args.kubeconfig, server.kubeconfig_yaml()) {
            eprintln!("lastgasp-apiserver: {}: {e}", args.kubeconfig.display());
            std::process::exit(1);
        }
        println!("serving the Kubernetes API on {}; kubeconfig in {}", server.url(), args.kubeconfig.display());
        let _ = tokio::signal::ctrl_c().await;
        println!("lastgasp-apiserver: {} requests served", server.requests());
    });
}
