//! Latency stamps, for measurement only: a board that has a cycle counter
//! (or QEMU's virtual clock under `-icount`, where one nanosecond is one
//! guest instruction) registers it here, and the tasks log how long a
//! trigger took from the last console byte of its line to the first frame
//! handed to the NIC, and to the first report frame.
use core::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static NS_PER_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Register the board's free-running counter and its period in nanoseconds.
pub fn set_counter(read: fn() -> u32, ns_per_count: u32) {
    NS_PER_COUNT.store(ns_per_count as usize, Ordering::Relaxed);
    COUNTER.store(read as usize, Ordering::Release);
}

/// The counter now, if the board registered one.
pub fn stamp() -> Option<u32> {
    let p = COUNTER.load(Ordering::Acquire);
    if p == 0 {
        return None;
    }
    // SAFETY: only `set_counter` stores here, and it stores a `fn() -> u32`.
    let read: fn() -> u32 = unsafe { core::mem::transmute::<usize, fn() -> u32>(p) };
    Some(read())
}

/// Nanoseconds between two stamps.
pub fn elapsed_ns(from: u32, to: u32) -> u64 {
    u64::from(to.wrapping_sub(from)) * NS_PER_COUNT.load(Ordering::Relaxed) as u64
}

/// The UDP payload of an Ethernet (optionally 802.1Q) / IPv4 / UDP frame.
pub fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut off = 12;
    if frame.get(off..off + 2)? == [0x81, 0x00] {
        off += 4;
    }
    if frame.get(off..off + 2)? != [0x08, 0x00] {
        return None;
    }
    let ip = off + 2;
    let ihl = usize::from(frame.get(ip)? & 0x0f) * 4;
    if *frame.get(ip + 9)? != 17 {
        return None;
    }
    frame.get(ip + ihl + 8..)
}
