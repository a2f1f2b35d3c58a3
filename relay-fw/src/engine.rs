//! From [`FwConfig`] to relay-core's [`Relay`]: one netpoll-style frame
//! template per collector, built once at boot (the destination MAC starts as
//! broadcast and is replaced by the [`arp`](crate::tasks::arp) task as soon as
//! the collector's next hop answers).
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag};
use relay_core::relay::{Relay, RelayConfig};

use crate::config::FwConfig;

/// The relay state machine the tasks drive.
pub type Engine = Relay;

/// Build the relay for `cfg`, sending from `src_mac`/`src_ip`; None (logged)
/// when relay-core refuses the configuration.
pub fn build(
    cfg: &FwConfig,
    boot_counter: u32,
    src_mac: [u8; 6],
    src_ip: [u8; 4],
) -> Option<Relay> {
    let mut templates = cfg.collectors.iter().map(|c| {
        let ep = Endpoints {
            src_mac: MacAddr(src_mac),
            // broadcast until ARP answers: a last gasp before that still gets out
            dst_mac: MacAddr([0xff; 6]),
            vlan: cfg.vlan.map(|v| VlanTag {
                pcp: v.pcp,
                vid: v.vid,
            }),
            ip: IpEndpoints::V4 {
                src: src_ip,
                dst: c.ip,
            },
            src_port: c.src_port,
            dst_port: c.port,
        };
        FrameTemplate::new(&ep, cfg.mtu)
    });
    let first = match templates.next()? {
        Ok(t) => t,
        Err(e) => {
            let _ = e;
            defmt::error!("relay: collector 0 refused (address, VLAN or MTU)");
            return None;
        }
    };
    let mut rc = match RelayConfig::new(&cfg.relay_id, &cfg.node_name, cfg.key, boot_counter, first)
    {
        Ok(rc) => rc,
        Err(_) => {
            defmt::error!("relay: relay id, node name or collectors refused by relay-core");
            return None;
        }
    };
    for (i, t) in templates.enumerate() {
        let added = match t {
            Ok(t) => rc.collectors.push(t).is_ok(),
            Err(_) => false,
        };
        if !added {
            defmt::warn!("relay: collector {} refused, ignored", i + 1);
        }
    }
    rc.mirror = cfg.mirror_console;
    if cfg.mirror_lines_per_sec > 0 {
        rc.mirror_lines_per_sec = cfg.mirror_lines_per_sec;
    }
    match Relay::new(rc) {
        Ok(r) => {
            defmt::info!(
                "relay: {} for node {}, {} collector(s)",
                cfg.relay_id.as_str(),
                cfg.node_name.as_str(),
                cfg.collectors.len()
            );
            Some(r)
        }
        Err(_) => {
            defmt::error!("relay: configuration refused by relay-core");
            None
        }
    }
}
