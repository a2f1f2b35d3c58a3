//! Ways out: an AF_PACKET socket that puts relay-core's prebuilt Ethernet
//! frames on the NIC as they are (netpoll's model: no routing, no ARP, no
//! socket buffers of the IP stack at panic time), and a plain UDP socket as the
//! fallback. Plus the interface facts the frame template needs and an ARP
//! probe for a collector the kernel has not resolved yet.
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;

/// What the frame template needs to know about the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u16,
}

impl Interface {
    /// Look an interface up by name (sysfs + if_nametoindex).
    pub fn by_name(name: &str) -> io::Result<Interface> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: cname is a valid C string for the call's duration.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {name:?}")));
        }
        let sys = std::path::Path::new("/sys/class/net").join(name);
        let mac_text = std::fs::read_to_string(sys.join("address"))?;
        let mac = crate::config::parse_mac(mac_text.trim())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{name} has no Ethernet address ({})", mac_text.trim())))?;
        let mtu = std::fs::read_to_string(sys.join("mtu"))?
            .trim()
            .parse::<u32>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name} mtu: {e}")))?;
        Ok(Interface { name: name.to_string(), index, mac, mtu: u16::try_from(mtu).unwrap_or(u16::MAX) })
    }
}

/// Anything a whole Ethernet frame can be handed to.
pub trait FrameSink {
    /// Send one frame; an error means this frame did not leave.
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()>;
}

fn packet_socket(protocol: u16, ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol.to_be())) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex"))?;
    // SAFETY: valid fd; pointer and length describe a sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: valid fd; pointer and length of an int.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const i32).cast(), std::mem::size_of::<i32>() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// AF_PACKET transmit socket bound to one interface. Protocol 0: it never
/// receives, so nothing queues up in it.
#[derive(Debug)]
pub struct PacketSink {
    fd: OwnedFd,
}

impl PacketSink {
    /// Open it on `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32) -> io::Result<PacketSink> {
        let fd = packet_socket(0, ifindex)?;
        // Straight to the driver, as netpoll does: a stuck qdisc must not hold
        // the last gasp. Old kernels lack it; that only costs the shortcut.
        if let Err(e) = set_int_opt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1) {
            tracing::debug!(error = %e, "PACKET_QDISC_BYPASS unavailable");
        }
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 6)?;
        Ok(PacketSink { fd })
    }
}

impl FrameSink for PacketSink {
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: valid fd; frame is a live buffer of frame.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short AF_PACKET send"));
        }
        Ok(())
    }
}

/// The UDP datagram inside an Ethernet frame.
#[derive(Debug, PartialEq, Eq)]
pub struct UdpInFrame<'a> {
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Source port.
    pub src_port: u16,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Find the UDP datagram in an Ethernet (optionally 802.1Q) IPv4/IPv6 frame.
pub fn udp_in_frame(frame: &[u8]) -> Option<UdpInFrame<'_>> {
    let be16 = |b: &[u8], at: usize| Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    if ethertype == ETH_P_8021Q {
        at += 4;
        ethertype = be16(frame, at)?;
    }
    let ip = frame.get(at + 2..)?;
    let (dst_ip, udp) = match ethertype {
        ETH_P_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != 17 || ihl < 20 {
                return None;
            }
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::from(dst), ip.get(ihl..)?)
        }
        ETH_P_IPV6 => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (IpAddr::from(dst), ip.get(40..)?)
        }
        _ => return None,
    };
    let src_port = be16(udp, 0)?;
    let dst_port = be16(udp, 2)?;
    let len = usize::from(be16(udp, 4)?);
    let payload = udp.get(8..len)?;
    Some(UdpInFrame { dst: SocketAddr::new(dst_ip, dst_port), src_port, payload })
}

/// The fallback: a UDP socket bound to the relay's source address and port;
/// each frame's payload goes through the kernel's stack to the frame's
/// destination.
#[derive(Debug)]
pub struct UdpSink {
    socket: UdpSocket,
}

impl UdpSink {
    /// Bind to `source` (an unspecified IP lets the kernel choose).
    pub fn bind(source: SocketAddr) -> io::Result<UdpSink> {
        let socket = UdpSocket::bind(source)?;
        socket.set_nonblocking(true)?;
        Ok(UdpSink { socket })
    }
}

impl FrameSink for UdpSink {
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let udp = udp_in_frame(frame).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame holds no UDP datagram"))?;
        self.socket.send_to(udp.payload, udp.dst)?;
        Ok(())
    }
}

/// Ask `target`'s MAC with one broadcast ARP request on `iface` and wait up to
/// `wait` for the answer. For a collector the kernel has not talked to yet;
/// it never runs on the last-gasp path.
pub fn arp_probe(iface: &Interface, src: Ipv4Addr, target: Ipv4Addr, wait: Duration) -> io::Result<Option<[u8; 6]>> {
    let fd = packet_socket(ETH_P_ARP, iface.index)?;
    let mut req = Vec::with_capacity(42);
    req.extend_from_slice(&[0xff; 6]);
    req.extend_from_slice(&iface.mac);
    req.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    req.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    req.extend_from_slice(&iface.mac);
    req.extend_from_slice(&src.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&target.octets());
    // SAFETY: valid fd; req is a live buffer.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 128];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: valid fd; buf is a live buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let Some(reply) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else { continue };
        // ARP reply (op 2) whose sender IP is the target.
        if reply.get(20..22) == Some(&[0, 2]) && reply.get(28..32) == Some(&target.octets()[..]) {
            if let Some(mac) = reply.get(22..28).and_then(|m| <[u8; 6]>::try_from(m).ok()) {
                return Ok(Some(mac));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(vlan: bool) -> Vec<u8> {
        let mut f = vec![0xaa; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip.extend_from_slice(&[0x1a, 0x09, 0x1a, 0x0a, 0, 13, 0, 0]);
        ip.extend_from_slice(b"hello");
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 10]); // Ethernet padding must not leak into the payload
        f
    }

    #[test]
    fn finds_the_udp_payload() {
        for vlan in [false, true] {
            let f = frame(vlan);
            let u = udp_in_frame(&f);
            assert_eq!(
                u,
                Some(UdpInFrame { dst: "10.0.0.2:6666".parse().unwrap_or_else(|_| unreachable!()), src_port: 6665, payload: b"hello" })
            );
        }
    }

    #[test]
    fn refuses_non_udp_and_truncated_frames() {
        let mut f = frame(false);
        f[14 + 9] = 6; // TCP
        assert_eq!(udp_in_frame(&f), None);
        let f = frame(false);
        for cut in 0..(14 + 20 + 8 + 5) {
            assert_eq!(udp_in_frame(&f[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn loopback_has_no_ethernet_address_of_use() -> io::Result<()> {
        let lo = Interface::by_name("lo")?;
        assert_eq!(lo.mac, [0; 6]);
        assert!(Interface::by_name("no-such-if0").is_err());
        Ok(())
    }
}
