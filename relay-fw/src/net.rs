//! The embassy-net side: stack configuration from [`FwConfig`].
use embassy_net::{Config, Ipv4Address, Ipv4Cidr, StaticConfigV4};

use crate::config::{FwConfig, Ipv4Setup};

/// The stack configuration for `cfg`'s address setup.
pub fn stack_config(cfg: &FwConfig) -> Config {
    match cfg.ipv4 {
        Ipv4Setup::Static {
            addr: [a, b, c, d],
            prefix_len,
        } => Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), prefix_len),
            gateway: cfg.gateway.map(|[a, b, c, d]| Ipv4Address::new(a, b, c, d)),
            dns_servers: heapless::Vec::new(),
        }),
        Ipv4Setup::Dhcp => Config::dhcpv4(Default::default()),
    }
}
