//! Just enough rtnetlink to ask the kernel two questions, as `ip route get`
//! and `ip neigh show` do: which next hop and interface reach an address, and
//! which MAC the neighbour table holds for it. IPv4 and IPv6 alike.
//!
//! Replies are parsed with bounds-checked reads; a malformed message is an
//! error, never a panic.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states whose MAC can be used (REACHABLE, STALE, DELAY, PROBE,
/// PERMANENT, NOARP); INCOMPLETE and FAILED cannot.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// The kernel's answer to "how do I reach `dst`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Outgoing interface.
    pub ifindex: u32,
    /// The gateway, when `dst` is not on a connected subnet.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
}

impl Route {
    /// The address whose MAC goes into the frame: the gateway, or `dst` itself.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

/// One usable neighbour table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface the entry belongs to.
    pub ifindex: u32,
    /// The neighbour's IP.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// NUD_* state bits.
    pub state: u16,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {msg}"))
}

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walk rtattrs: (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)?;
        let payload = b.get(4..len)?;
        b = b.get(align4(len)..).unwrap_or_default();
        Some((ty & 0x3fff, payload))
    })
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let sock = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
        // SAFETY: valid fd, pointer and length of a timeval.
        unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(sock)
    }

    /// Send one request and collect the payloads of every reply message of
    /// type `want` until DONE (dump) or the first reply (single request).
    fn request(&self, ty: u16, flags: u16, body: &[u8], want: u16) -> io::Result<Vec<Vec<u8>>> {
        let seq = 1u32;
        let len = NLMSG_HDR + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: valid fd; msg is a live buffer of msg.len() bytes.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: valid fd; buf is a live buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = buf.get(..n as usize).unwrap_or_default();
            while rest.len() >= NLMSG_HDR {
                let mlen = u32_at(rest, 0).ok_or_else(|| invalid("short header"))? as usize;
                let mty = u16_at(rest, 4).ok_or_else(|| invalid("short header"))?;
                let payload = rest.get(NLMSG_HDR..mlen).ok_or_else(|| invalid("message length past datagram"))?;
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = u32_at(payload, 0).ok_or_else(|| invalid("short error"))? as i32;
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    t if t == want => {
                        out.push(payload.to_vec());
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                rest = rest.get(align4(mlen).max(NLMSG_HDR)..).unwrap_or_default();
            }
        }
    }
}

/// `ip route get <dst>`.
pub fn route_get(dst: IpAddr) -> io::Result<Route> {
    let addr = ip_bytes(dst);
    let mut body = vec![0u8; 12];
    body[0] = family_of(dst);
    body[1] = (addr.len() * 8) as u8;
    let alen = 4 + addr.len();
    body.extend_from_slice(&(alen as u16).to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&addr);
    body.resize(align4(body.len()), 0);
    let replies = Socket::open()?.request(RTM_GETROUTE, 0, &body, RTM_NEWROUTE)?;
    let reply = replies.first().ok_or_else(|| invalid("no route reply"))?;
    let mut route = Route { ifindex: 0, gateway: None, prefsrc: None };
    for (ty, p) in attrs(reply.get(12..).ok_or_else(|| invalid("short rtmsg"))?) {
        match ty {
            RTA_OIF => route.ifindex = u32_at(p, 0).ok_or_else(|| invalid("bad RTA_OIF"))?,
            RTA_GATEWAY => route.gateway = ip_from(p),
            RTA_PREFSRC => route.prefsrc = ip_from(p),
            _ => {}
        }
    }
    if route.ifindex == 0 {
        return Err(invalid("route without an output interface"));
    }
    Ok(route)
}

/// The usable entries of the kernel's neighbour table for one family.
pub fn neighbours(v6: bool) -> io::Result<Vec<Neighbour>> {
    let mut body = vec![0u8; 12];
    body[0] = if v6 { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 };
    let replies = Socket::open()?.request(RTM_GETNEIGH, NLM_F_DUMP, &body, RTM_NEWNEIGH)?;
    let mut out = Vec::new();
    for r in replies {
        let (Some(ifindex), Some(state)) = (u32_at(&r, 4), u16_at(&r, 8)) else { continue };
        if state & NUD_USABLE == 0 {
            continue;
        }
        let (mut ip, mut mac) = (None, None);
        for (ty, p) in attrs(r.get(12..).unwrap_or_default()) {
            match ty {
                NDA_DST => ip = ip_from(p),
                NDA_LLADDR => mac = <[u8; 6]>::try_from(p).ok(),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.push(Neighbour { ifindex, ip, mac, state });
        }
    }
    Ok(out)
}

/// The MAC the neighbour table holds for `ip` on `ifindex`, if usable.
/// IPv4 falls back to `/proc/net/arp` where the neighbour dump is refused
/// (seccomp filters, qemu-user's netlink translation).
pub fn lookup_neighbour(ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
    let table = match neighbours(ip.is_ipv6()) {
        Ok(t) => t,
        Err(e) if ip.is_ipv4() => {
            tracing::debug!(error = %e, "RTM_GETNEIGH refused; reading /proc/net/arp");
            proc_net_arp(&std::fs::read_to_string("/proc/net/arp")?, |name| {
                let c = std::ffi::CString::new(name).ok()?;
                // SAFETY: c is a valid C string for the call's duration.
                let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                (i != 0).then_some(i)
            })
        }
        Err(e) => return Err(e),
    };
    Ok(table.into_iter().find(|n| n.ifindex == ifindex && n.ip == ip).map(|n| n.mac))
}

/// Complete entries of `/proc/net/arp` (`IP HWtype Flags HWaddr Mask Device`).
pub fn proc_net_arp(text: &str, ifindex: impl Fn(&str) -> Option<u32>) -> Vec<Neighbour> {
    const ATF_COM: u16 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [ip, _hwtype, flags, mac, _mask, dev] = f.as_slice() else { return None };
            let flags = u16::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            if flags & ATF_COM == 0 {
                return None;
            }
            Some(Neighbour {
                ifindex: ifindex(dev)?,
                ip: IpAddr::V4(ip.parse().ok()?),
                mac: crate::config::parse_mac(mac)?,
                state: flags,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_route_goes_out_lo() -> io::Result<()> {
        let r = route_get(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex")?;
        assert_eq!(r.ifindex.to_string(), lo.trim());
        assert_eq!(r.gateway, None);
        assert_eq!(r.next_hop(IpAddr::V4(Ipv4Addr::LOCALHOST)), IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(())
    }

    #[test]
    fn neighbour_dump_parses() -> io::Result<()> {
        // Whatever the table holds, every entry must be well-formed.
        for n in neighbours(false)? {
            assert!(n.ip.is_ipv4());
            assert!(n.ifindex > 0);
        }
        Ok(())
    }

    #[test]
    fn proc_net_arp_keeps_complete_entries() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.0.0.5         0x1         0x2         02:00:00:00:00:05     *        eth0\n\
                    10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                    10.0.0.7         0x1         0x6         02:00:00:00:00:07     *        eth9\n\
                    garbage\n";
        let n = proc_net_arp(text, |d| (d == "eth0").then_some(2));
        assert_eq!(n, vec![Neighbour { ifindex: 2, ip: "10.0.0.5".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), mac: [2, 0, 0, 0, 0, 5], state: 2 }]);
    }

    #[test]
    fn attr_walk_stops_on_truncation() {
        let mut b = vec![8, 0, 1, 0, 10, 0, 0, 1];
        b.extend_from_slice(&[200, 0, 2, 0, 1]);
        let got: Vec<_> = attrs(&b).collect();
        assert_eq!(got, vec![(1u16, &[10u8, 0, 0, 1][..])]);
    }
}
