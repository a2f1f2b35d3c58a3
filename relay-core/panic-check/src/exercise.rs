//! Calls into every public entry point of relay-core with opaque inputs.
use core::hint::black_box;
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{self, Freshness, Report, MAX_REPORT_LEN};

/// Everything, in the order data flows.
pub fn all() {
    report_api();
    frame_api();
}

fn report_api() {
    let key: [u8; 32] = *black_box(&[7u8; 32]);
    let r = Report {
        version: black_box(report::VERSION),
        relay_id: black_box("relay-0"),
        node_name: black_box("node-0"),
        boot_counter: black_box(1),
        sequence: black_box(2),
        kind: black_box(Kind::KernelPanic),
        certainty: black_box(Certainty::Suspected),
        trigger_line: black_box("Kernel panic - not syncing: x"),
        host_ts_usec: black_box(Some(3)),
        context_lines: black_box(4),
        repeat_index: black_box(5),
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let out: &mut [u8] = black_box(&mut buf[..]);
    black_box(report::encode_signed(&r, &key, out).is_ok());
    let datagram: &[u8] = black_box(&buf[..]);
    black_box(report::is_report(datagram));
    black_box(report::truncate_utf8(black_box("héllo"), black_box(2)));
    let mut fresh = Freshness::<4>::new();
    if let Ok(got) = report::verify(datagram, &key) {
        black_box(fresh.check(&got).is_ok());
        black_box(fresh.get(got.relay_id));
    }
    black_box(&fresh);
}

fn frame_api() {
    use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN};
    let ep = Endpoints {
        src_mac: MacAddr(black_box([2, 0, 0, 0, 0, 1])),
        dst_mac: MacAddr(black_box([2, 0, 0, 0, 0, 2])),
        vlan: black_box(Some(VlanTag { pcp: 1, vid: 2 })),
        ip: black_box(IpEndpoints::V6 { src: [1; 16], dst: [2; 16] }),
        src_port: black_box(6666),
        dst_port: black_box(6666),
    };
    if let Ok(mut tpl) = FrameTemplate::new(&ep, black_box(1500)) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let out: &mut [u8] = black_box(&mut buf[..]);
        let payload: &[u8] = black_box(&[0x41; 1000]);
        black_box(tpl.write(payload, out).is_ok());
        let parts: &[&[u8]] = black_box(&[b"ab", b"c", b"defgh"]);
        black_box(tpl.write_parts(parts, out).is_ok());
        tpl.set_dst_mac(MacAddr(black_box([2, 0, 0, 0, 0, 3])));
        tpl.set_next_ip_id(black_box(7));
        black_box((tpl.header_len(), tpl.max_payload(), tpl.next_ip_id(), tpl.endpoints()));
        black_box(&tpl);
    }
}
