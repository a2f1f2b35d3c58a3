//! An in-process Kubernetes API server for tests.
//!
//! It speaks the REST API that kube-rs clients and reflectors use for Nodes,
//! Pods, Events, Namespaces and Leases, over plain HTTP on 127.0.0.1, and it
//! copies the real server's semantics where lastgasp depends on them:
//! - a new Node gets `node.kubernetes.io/not-ready:NoSchedule`;
//! - a merge patch replaces whole lists (strategic merge keys lists only where
//!   the built-in types say so; `spec.taints` is atomic);
//! - deleting a Pod bound to a node only sets `deletionTimestamp` unless
//!   `gracePeriodSeconds=0`;
//! - status is written only through `/status`, spec only through the object;
//! - a stale resourceVersion gets 409, a failed JSON-patch `test` gets 422;
//! - watches resume from a resourceVersion (410 when it is too old);
//! - `dryRun=All` validates without persisting.
//!
//! [`cluster::TestCluster`] picks this server or a real cluster (`LASTGASP_K8S=real`).
pub mod cluster;
mod http;
mod patch;
pub mod proxy;
mod select;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use http::{Access, SEED_HEADER};
pub use store::Store;

/// A running in-process API server; stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<http::Shared>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Starts a server on a random loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(http::Shared {
            store: Store::new(200_000),
            writes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            audit: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        });
        let app = axum::Router::new().fallback(http::handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("in-process apiserver stopped: {e}");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube-rs configuration pointing at this server (no auth, namespace `default`).
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().unwrap_or_default());
        config.default_namespace = "default".into();
        config
    }

    /// Like [`config`](Self::config), but marked so that its requests stay out of
    /// [`audit`](Self::audit): for the test's own seeding and assertions.
    pub fn seed_config(&self) -> kube::Config {
        let mut config = self.config();
        config.headers.push((
            http_header(SEED_HEADER),
            axum::http::HeaderValue::from_static("1"),
        ));
        config
    }

    /// Every kind of access made by clients other than the seeding one.
    pub fn audit(&self) -> Vec<Access> {
        self.shared.audit.lock().map(|a| a.iter().cloned().collect()).unwrap_or_default()
    }

    /// A kubeconfig file body pointing at this server, for the bridge binary.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: inproc\n  cluster:\n    server: {}\n\
             contexts:\n- name: inproc\n  context:\n    cluster: inproc\n    user: inproc\n    namespace: default\n\
             current-context: inproc\nusers:\n- name: inproc\n  user: {{}}\n",
            self.url()
        )
    }

    /// The object store, for assertions that look beneath the API.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Successful non-dry-run writes served so far.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_header(name: &'static str) -> axum::http::HeaderName {
    axum::http::HeaderName::from_static(name)
}
