//! `recvmmsg(2)`: many datagrams per system call.
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Reusable buffers for one `recvmmsg` call.
pub struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

// The raw pointers inside point into the struct's own heap buffers, which never move.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `n` datagrams of up to `slot` bytes.
    pub fn new(n: usize, slot: usize) -> Self {
        let n = n.max(1);
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs; all-zero is valid.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut b = Self {
            slot,
            bufs: vec![0; n * slot],
            addrs: vec![zero_addr; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            filled: 0,
        };
        for i in 0..n {
            b.iovs.push(libc::iovec {
                // SAFETY: i * slot is within bufs (n * slot bytes).
                iov_base: unsafe { b.bufs.as_mut_ptr().add(i * slot) }.cast(),
                iov_len: slot,
            });
        }
        for i in 0..n {
            // SAFETY: see above.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = std::ptr::addr_of_mut!(b.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = std::ptr::addr_of_mut!(b.addrs[i]).cast();
            b.hdrs.push(h);
        }
        b
    }

    /// Datagrams per call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receive without blocking; returns how many datagrams arrived.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> std::io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let vlen = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: hdrs point at iovs/addrs/bufs owned by self, sized as declared.
        let r = unsafe { libc::recvmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if r < 0 {
            self.filled = 0;
            return Err(std::io::Error::last_os_error());
        }
        self.filled = usize::try_from(r).unwrap_or(0);
        Ok(self.filled)
    }

    /// Datagram `i` of the last call: source, payload, truncated flag.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8], bool)> {
        if i >= self.filled {
            return None;
        }
        let h = self.hdrs.get(i)?;
        let len = (h.msg_len as usize).min(self.slot);
        let data = self.bufs.get(i * self.slot..i * self.slot + len)?;
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let src = to_socket_addr(self.addrs.get(i)?)?;
        Some((src, data, truncated))
    }
}

fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says sockaddr_in; storage is large enough and aligned.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}
