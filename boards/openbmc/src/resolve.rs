//! The collectors' next-hop MACs, from the kernel's neighbour table.
//!
//! The frame template carries the MAC, so nothing is resolved at panic time.
//! It is learned at start and re-read periodically on a thread of its own
//! (a slow ARP probe must never stall the relay loop); a change is handed to
//! the loop, which patches the template with `set_collector_mac`.
use crate::config::Collector;
use crate::net::{arp_probe, Interface};
use crate::netlink;
use crate::relay_loop::Input;
use std::io;
use std::net::IpAddr;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// How long one ARP probe waits for its answer.
pub const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Resolves collectors' MACs on one interface.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// The interface frames leave by.
    pub iface: Interface,
    /// The relay's source IP (for ARP probes).
    pub source_ip: IpAddr,
}

impl Resolver {
    /// The next-hop MAC for `c`: pinned in the config, else the neighbour
    /// table's entry for the kernel's next hop, else (IPv4) an ARP probe.
    pub fn resolve(&self, c: &Collector) -> io::Result<Option<[u8; 6]>> {
        if let Some(mac) = c.mac {
            return Ok(Some(mac));
        }
        let dst = c.address.ip();
        let route = netlink::route_get(dst)?;
        if route.ifindex != self.iface.index {
            tracing::warn!(collector = %c.address, route_ifindex = route.ifindex, interface = %self.iface.name,
                "the kernel routes this collector out of another interface; frames still leave by the configured one");
        }
        let hop = route.next_hop(dst);
        if let Some(mac) = netlink::lookup_neighbour(self.iface.index, hop)? {
            return Ok(Some(mac));
        }
        match (hop, self.source_ip) {
            (IpAddr::V4(hop), IpAddr::V4(src)) => arp_probe(&self.iface, src, hop, PROBE_WAIT),
            _ => Ok(None),
        }
    }
}

/// The source IP the kernel would use towards `dst` (`ip route get`'s `src`).
pub fn kernel_source_ip(dst: IpAddr) -> io::Result<IpAddr> {
    netlink::route_get(dst)?
        .prefsrc
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("the kernel has no source address towards {dst}")))
}

/// Start the refresher: every `period`, resolve each collector and send
/// [`Input::CollectorMac`] when its MAC differs from `known`. Ends when the
/// relay loop is gone.
pub fn spawn_refresher(
    resolver: Resolver,
    collectors: Vec<Collector>,
    mut known: Vec<Option<[u8; 6]>>,
    period: Duration,
    tx: SyncSender<Input>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("neighbours".into()).spawn(move || loop {
        std::thread::sleep(period);
        for (i, c) in collectors.iter().enumerate() {
            match resolver.resolve(c) {
                Ok(Some(mac)) if known.get(i).copied().flatten() != Some(mac) => {
                    tracing::info!(collector = %c.address, mac = %fmt_mac(&mac), "collector MAC learned");
                    if let Some(k) = known.get_mut(i) {
                        *k = Some(mac);
                    }
                    // A blocking send is fine here: this thread only refreshes.
                    if tx.send(Input::CollectorMac(i, mac)).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(collector = %c.address, "collector MAC unknown (no neighbour entry, no ARP answer); keeping the last one"),
                Err(e) => tracing::warn!(collector = %c.address, error = %e, "neighbour lookup failed"),
            }
        }
    })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
