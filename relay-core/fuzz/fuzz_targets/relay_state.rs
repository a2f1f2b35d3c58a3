//! Fuzz the relay state machine: arbitrary console bytes, board signals and
//! clock steps. It must never panic or spin, every frame it emits must carry
//! a datagram that decodes as extended netconsole or verifies as a report,
//! and `poll_timeout` must never claim work that `poll_transmit` does not do.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay_core::detect::HostSignal;
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
use relay_core::netconsole::ExtRepr;
use relay_core::relay::{RelayConfig, RelayWith};
use relay_core::report;
use relay_core::{Duration, Instant};

const KEY: [u8; 32] = [0x42; 32];

fn template(n: u8) -> FrameTemplate {
    let ep = Endpoints {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2 + n]),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2 + n],
        },
        src_port: 6665,
        dst_port: 6666,
    };
    FrameTemplate::new(&ep, 1500).expect("valid template")
}

fn check(frame: &[u8]) {
    // 14-byte Ethernet + 20-byte IPv4 + 8-byte UDP headers.
    let payload = &frame[42..];
    if report::is_report(payload) {
        report::verify(payload, &KEY).expect("the relay's reports verify");
    } else {
        ExtRepr::parse(payload).expect("the relay's lines decode as extended netconsole");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, ops)) = data.split_first() else {
        return;
    };
    let mut cfg = RelayConfig::new("relay-f", "node-f", KEY, 1, template(0)).expect("config");
    let _ = cfg.collectors.push(template(1));
    cfg.mirror = ctl & 1 != 0;
    cfg.mirror_lines_per_sec = u32::from(ctl >> 4) + 1;
    cfg.mirror_burst = u32::from(ctl & 0x0e) + 1;
    cfg.after_lines = u16::from(ctl >> 2);
    cfg.first_line_seq = u64::MAX - u64::from(ctl);
    cfg.first_report_seq = u32::MAX - u32::from(ctl & 3);
    // A small ring so that eviction and loss accounting get exercised.
    let mut relay = RelayWith::<512, 128>::with_sizes(cfg).expect("relay");
    let mut now = Instant(0);
    let mut buf = [0u8; MAX_FRAME_LEN];
    // Ops: a tag byte, then for console writes a length byte and the bytes.
    let mut rest = ops;
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag % 8 {
            0 | 1 | 2 | 3 => {
                let n = usize::from(tag / 8).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                relay.handle_console(chunk, now);
                rest = tail;
            }
            4 => {
                let sig = match tag / 8 % 4 {
                    0 => HostSignal::PowerLost,
                    1 => HostSignal::PowerRestored,
                    2 => HostSignal::Caterr,
                    _ => HostSignal::WatchdogExpired,
                };
                relay.handle_signal(sig, now);
            }
            5 => now = now.saturating_add(Duration::from_millis(u64::from(tag))),
            6 => {
                if let Some(t) = relay.poll_timeout() {
                    now = now.max(t);
                }
            }
            _ => {
                let _ = relay.set_mirror(tag & 8 != 0);
            }
        }
        let mut frames = 0u32;
        while let Some(n) = relay.poll_transmit(now, &mut buf) {
            check(&buf[..n]);
            frames += 1;
            assert!(frames < 100_000, "poll_transmit never ran dry");
        }
        if let Some(t) = relay.poll_timeout() {
            assert!(
                t > now,
                "poll_timeout says work is ready but poll_transmit sent nothing"
            );
        }
    }
});
