//! Instruction-count benchmark of the frame template against smoltcp's UDP path.
//!
//! Run by `cargo xtask bench` under callgrind as `frame_callgrind <case> <iterations>`:
//! the binary sets the case up, then runs its measured operation `iterations`
//! times. The runner subtracts a 0-iteration run, so setup and process start-up
//! cancel out and what remains is the cost of the operation itself.
//!
//! Cases (each sends one 1000-byte UDP payload as an Ethernet/IPv4 frame):
//! - `frame-write`: [`FrameTemplate::write`] into a frame buffer.
//! - `frame-write-parts`: [`FrameTemplate::write_parts`] with the payload in two
//!   pieces split at an odd offset (a 61-byte header and its 939-byte body).
//! - `smoltcp-udp`: `udp::Socket::send_slice` + `Interface::poll` over an
//!   in-memory device that keeps the transmitted frame (ARP already resolved).
// A host-only benchmark: failing loudly is its job; the no-panic lints are for the library.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, Ipv4Address,
};
use std::hint::black_box;
use std::process::ExitCode;

/// Payload bytes per datagram: about one netconsole chunk (MAX_PRINT_CHUNK).
const PAYLOAD_LEN: usize = 1000;
const RELAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x99, 0x00, 0x02];
const COLLECTOR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x99, 0x00, 0x01];
const RELAY_IP: [u8; 4] = [10, 99, 0, 2];
const COLLECTOR_IP: [u8; 4] = [10, 99, 0, 1];
const PORT: u16 = 6666;

fn payload() -> [u8; PAYLOAD_LEN] {
    // Printable text, like a console line; the content does not steer either path.
    let mut p = [0u8; PAYLOAD_LEN];
    for (i, b) in p.iter_mut().enumerate() {
        *b = b' ' + (i % 95) as u8;
    }
    p
}

fn bench_frame(iterations: u64, split: Option<usize>) -> Result<usize, String> {
    let ep = Endpoints {
        src_mac: MacAddr(RELAY_MAC),
        dst_mac: MacAddr(COLLECTOR_MAC),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: RELAY_IP,
            dst: COLLECTOR_IP,
        },
        src_port: PORT,
        dst_port: PORT,
    };
    let mut tpl = FrameTemplate::new(&ep, 1500).map_err(|e| e.to_string())?;
    let payload = payload();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut len = 0;
    for _ in 0..iterations {
        len = match split {
            None => measured_frame(&mut tpl, black_box(&payload), &mut buf)?,
            Some(at) => {
                let (head, body) = payload.split_at(at);
                measured_frame_parts(&mut tpl, black_box(&[head, body]), &mut buf)?
            }
        };
        black_box(&buf);
    }
    Ok(len)
}

#[inline(never)]
fn measured_frame(
    tpl: &mut FrameTemplate,
    payload: &[u8],
    buf: &mut [u8],
) -> Result<usize, String> {
    tpl.write(payload, buf).map_err(|e| e.to_string())
}

#[inline(never)]
fn measured_frame_parts(
    tpl: &mut FrameTemplate,
    parts: &[&[u8]],
    buf: &mut [u8],
) -> Result<usize, String> {
    tpl.write_parts(parts, buf).map_err(|e| e.to_string())
}

/// An in-memory NIC: one optional received frame, and the last transmitted one.
struct MemDevice {
    rx: Option<Vec<u8>>,
    tx: [u8; MAX_FRAME_LEN],
    tx_len: usize,
}

struct MemRx(Vec<u8>);
struct MemTx<'a>(&'a mut [u8; MAX_FRAME_LEN], &'a mut usize);

impl phy::RxToken for MemRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for MemTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        *self.1 = len;
        f(&mut self.0[..len])
    }
}

impl Device for MemDevice {
    type RxToken<'a> = MemRx;
    type TxToken<'a> = MemTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(MemRx, MemTx<'_>)> {
        let rx = self.rx.take()?;
        Some((MemRx(rx), MemTx(&mut self.tx, &mut self.tx_len)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<MemTx<'_>> {
        Some(MemTx(&mut self.tx, &mut self.tx_len))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// An ARP request from the collector for the relay's address: smoltcp learns
/// the collector's MAC from it, as the relay's template has it preconfigured.
fn arp_from_collector() -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(COLLECTOR_MAC),
        source_protocol_addr: Ipv4Address::from(COLLECTOR_IP),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from(RELAY_IP),
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(COLLECTOR_MAC),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut frame);
    eth.emit(&mut e);
    arp.emit(&mut ArpPacket::new_unchecked(e.payload_mut()));
    frame
}

fn bench_smoltcp(iterations: u64) -> Result<usize, String> {
    let mut dev = MemDevice {
        rx: Some(arp_from_collector()),
        tx: [0; MAX_FRAME_LEN],
        tx_len: 0,
    };
    let now = Instant::from_millis(1_000);
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(RELAY_MAC)));
    let mut iface = Interface::new(config, &mut dev, now);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(
            IpAddress::from(Ipv4Address::from(RELAY_IP)),
            24,
        ));
    });

    let mut rx_meta = [udp::PacketMetadata::EMPTY; 1];
    let mut rx_data = [0u8; 64];
    let mut tx_meta = [udp::PacketMetadata::EMPTY; 4];
    let mut tx_data = [0u8; 4 * PAYLOAD_LEN];
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let handle = sockets.add(socket);
    sockets
        .get_mut::<udp::Socket>(handle)
        .bind(PORT)
        .map_err(|e| e.to_string())?;

    // Take in the ARP request (and send smoltcp's reply) so the neighbour is known.
    iface.poll(now, &mut dev, &mut sockets);
    if dev.rx.is_some() {
        return Err("smoltcp did not take the ARP frame".into());
    }

    let payload = payload();
    let to = (IpAddress::from(Ipv4Address::from(COLLECTOR_IP)), PORT);
    dev.tx_len = 0;
    for _ in 0..iterations {
        measured_smoltcp(
            &mut iface,
            &mut dev,
            &mut sockets,
            handle,
            black_box(&payload),
            to,
            now,
        )?;
        black_box(&dev.tx);
    }
    if iterations > 0 {
        // The last frame must be the datagram, to the collector, with the whole payload.
        let frame = EthernetFrame::new_checked(&dev.tx[..dev.tx_len]).map_err(|e| e.to_string())?;
        if frame.dst_addr() != EthernetAddress(COLLECTOR_MAC)
            || frame.ethertype() != EthernetProtocol::Ipv4
        {
            return Err(format!("smoltcp sent something else: {frame}"));
        }
        if !dev.tx[..dev.tx_len].ends_with(&payload) {
            return Err("smoltcp frame does not end with the payload".into());
        }
    }
    Ok(dev.tx_len)
}

#[inline(never)]
fn measured_smoltcp(
    iface: &mut Interface,
    dev: &mut MemDevice,
    sockets: &mut SocketSet<'_>,
    handle: smoltcp::iface::SocketHandle,
    payload: &[u8],
    to: (IpAddress, u16),
    now: Instant,
) -> Result<(), String> {
    sockets
        .get_mut::<udp::Socket>(handle)
        .send_slice(payload, to)
        .map_err(|e| e.to_string())?;
    iface.poll(now, dev, sockets);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (case, iterations) = match args.as_slice() {
        [_, case, n] => match n.parse::<u64>() {
            Ok(n) => (case.as_str(), n),
            Err(e) => {
                eprintln!("frame_callgrind: iterations {n:?}: {e}");
                return ExitCode::from(2);
            }
        },
        // `cargo bench` runs bench targets with `--bench`; do a quick sanity run.
        _ => ("all", 1),
    };
    let result = match case {
        "frame-write" => bench_frame(iterations, None),
        "frame-write-parts" => bench_frame(iterations, Some(61)),
        "smoltcp-udp" => bench_smoltcp(iterations),
        "all" => {
            bench_frame(iterations, None).and_then(|a| bench_smoltcp(iterations).map(|b| a.max(b)))
        }
        other => Err(format!(
            "unknown case {other:?} (frame-write, frame-write-parts, smoltcp-udp)"
        )),
    };
    match result {
        Ok(len) => {
            if iterations > 0 && len != 14 + 20 + 8 + PAYLOAD_LEN {
                eprintln!(
                    "frame_callgrind: {case}: frame of {len} bytes, expected {}",
                    42 + PAYLOAD_LEN
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("frame_callgrind: {case}: {e}");
            ExitCode::FAILURE
        }
    }
}
