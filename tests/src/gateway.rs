//! A way out of the rig's private namespace to a real cluster.
//!
//! The rig's namespace reaches nothing by design, so a cluster from
//! `KUBECONFIG` (a kind cluster on this machine's loopback, or a remote API
//! server) is reached through a TCP forwarder: it listens on the namespace's
//! loopback and connects out from the namespace the rig was started in.
//! The user's kubeconfig is rewritten to point at the forwarder, keeping its
//! credentials and checking the server's certificate against the original
//! host name (`tls-server-name`), and written to the rig's state directory
//! for the bridge and the rig's own client.
//!
//! The forwarder runs on its own thread, created before the rig enters its
//! namespace: a thread, and every socket it opens, stays in the namespace it
//! was created in. The listening socket is opened inside the namespace and
//! handed over.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::apiserver::proxy::{Proxy, Upstream};
use crate::netns::NetNs;

/// The forwarder and the kubeconfig that goes through it; stops when dropped.
pub struct ClusterGateway {
    /// The cluster's own address, as the user's kubeconfig gives it.
    pub server: String,
    /// The rewritten kubeconfig (in the rig's state directory).
    pub kubeconfig: PathBuf,
    /// A client configuration that goes through the forwarder.
    pub config: kube::Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterGateway {
    /// Opens the way from `ns` to the cluster of `kubeconfig` (else of
    /// `$KUBECONFIG` or `~/.kube/config`), writing the rewritten kubeconfig
    /// into `dir`. Call it from a thread that has not entered `ns`.
    pub fn open(ns: &NetNs, kubeconfig: Option<&Path>, dir: &Path) -> Result<Self, String> {
        let mut kc = match kubeconfig {
            Some(p) => Kubeconfig::read_from(p).map_err(|e| format!("kubeconfig {}: {e}", p.display()))?,
            None => Kubeconfig::read().map_err(|e| format!("kubeconfig ($KUBECONFIG or ~/.kube/config): {e}"))?,
        };
        let context_name = kc.current_context.clone().ok_or("the kubeconfig has no current-context")?;
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| format!("the kubeconfig has no context {context_name:?}"))?;
        let cluster = kc
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_mut())
            .ok_or_else(|| format!("the kubeconfig has no cluster {cluster_name:?}"))?;
        if cluster.proxy_url.is_some() {
            return Err(format!("cluster {cluster_name:?} goes through a proxy-url, which the rig's gateway cannot chain"));
        }
        let server = cluster.server.clone().ok_or_else(|| format!("cluster {cluster_name:?} has no server"))?;
        // Resolved here, outside the namespace, where the cluster is reachable.
        let upstream = Upstream::of(&server)?;

        let listener = ns
            .within(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("forwarder listener: {e}"))?;
        let (addr, stop, thread) = forward(listener, upstream.addr)?;

        cluster.server = Some(upstream.via(addr));
        if upstream.https && cluster.tls_server_name.is_none() {
            cluster.tls_server_name = Some(upstream.host);
        }
        let text = serde_saphyr::to_string(&kc).map_err(|e| format!("kubeconfig: {e}"))?;
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio: {e}"))?
            .block_on(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()))
            .map_err(|e| format!("kubeconfig: {e}"))?;
        Ok(Self { server, kubeconfig: path, config, stop: Some(stop), thread: Some(thread) })
    }
}

type Forwarder = (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>);

/// Runs a [`Proxy`] from `listener` to `upstream` on a new thread of the
/// calling thread's namespace.
fn forward(listener: std::net::TcpListener, upstream: SocketAddr) -> Result<Forwarder, String> {
    listener.set_nonblocking(true).map_err(|e| format!("forwarder listener: {e}"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cluster-gateway".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let proxy = tokio::net::TcpListener::from_std(listener).and_then(|l| Proxy::on(l, upstream));
                match proxy {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(p.addr()));
                        let _ = stopped.await;
                        drop(p);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("forwarder: {e}")));
                    }
                }
            });
        })
        .map_err(|e| format!("forwarder thread: {e}"))?;
    let addr = ready_rx
        .recv()
        .map_err(|_| "the forwarder thread ended before it was ready".to_owned())??;
    Ok((addr, stop, thread))
}

impl Drop for ClusterGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
