//! Just enough ARP for the netpoll-style path: build a request for a
//! collector's (or gateway's) address and learn senders' MACs from the ARP
//! frames the NIC receives. The IP stack keeps its own ARP cache; this one
//! feeds the relay's prebuilt frame headers.

/// Ethernet + ARP request, padded to the 60-byte minimum frame.
pub const REQUEST_LEN: usize = 60;

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// An ARP request (who-has `target_ip` tell `src_ip`), broadcast.
pub fn request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> [u8; REQUEST_LEN] {
    let mut f = [0u8; REQUEST_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP);
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&src_ip);
    f[38..42].copy_from_slice(&target_ip);
    f
}

/// The (sender IP, sender MAC) of an Ethernet/IPv4 ARP frame, request or
/// reply; None for anything else.
pub fn sender(frame: &[u8]) -> Option<([u8; 4], [u8; 6])> {
    if frame.get(12..14)? != ETHERTYPE_ARP || frame.get(14..20)? != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let mac: [u8; 6] = frame.get(22..28)?.try_into().ok()?;
    let ip: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
    // ignore broadcast/multicast senders: never a valid neighbour
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some((ip, mac))
}

/// Slots of [`NeighbourWatch`].
pub const WATCH_SLOTS: usize = 4;

/// The MACs last seen for a few IPv4 addresses (the collectors' next hops).
#[derive(Default)]
pub struct NeighbourWatch {
    slots: [Option<([u8; 4], Option<[u8; 6]>)>; WATCH_SLOTS],
    generation: u32,
}

impl NeighbourWatch {
    /// Start watching `ip`; false when every slot is taken.
    pub fn watch(&mut self, ip: [u8; 4]) -> bool {
        if self.slots.iter().flatten().any(|(w, _)| *w == ip) {
            return true;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(s) => {
                *s = Some((ip, None));
                true
            }
            None => false,
        }
    }

    /// Learn from a received frame; true when a watched MAC changed.
    pub fn inspect(&mut self, frame: &[u8]) -> bool {
        let Some((ip, mac)) = sender(frame) else {
            return false;
        };
        for (w, m) in self.slots.iter_mut().flatten() {
            if *w == ip && *m != Some(mac) {
                *m = Some(mac);
                self.generation = self.generation.wrapping_add(1);
                return true;
            }
        }
        false
    }

    /// The MAC last seen for `ip`.
    pub fn lookup(&self, ip: [u8; 4]) -> Option<[u8; 6]> {
        self.slots
            .iter()
            .flatten()
            .find(|(w, _)| *w == ip)
            .and_then(|(_, m)| *m)
    }

    /// Bumped on every change; lets a poller notice without comparing.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}
