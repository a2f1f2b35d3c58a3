//! lastgasp relay on QEMU's mps2-an386: wiring only. The board's drivers are
//! the modules below; the relay itself is relay-fw + relay-core.
//!
//! UART0: host console in · UART1: defmt log out · UART2: host signals in
//! (one byte each, see `signals.rs`) · LAN9118: the network · SysTick: time ·
//! semihosting: persistent storage and exit status.
#![no_std]
#![no_main]

mod lan9118;
mod log;
mod signals;
mod storage;
mod time_driver;
mod uart;

use embassy_executor::Spawner;
use embassy_net::StackResources;
use relay_fw::shared_nic::SharedNic;
use relay_fw::tasks::{self, RelayCell};
use static_cell::StaticCell;

use lan9118::Lan9118;
use uart::{RxState, UartRx};

type Nic = SharedNic<Lan9118>;

static CONSOLE: RxState<1024> = RxState::new(0x4000_4000, lan9118::free_run);
static SIGNALS: RxState<16> = RxState::new(0x4000_6000, lan9118::free_run);
static DEFAULT_CONFIG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/config.bin"));

#[derive(Clone, Copy)]
struct Irq(u16);
// SAFETY: the numbers are mps2-an386 external interrupts (UART0 RX 0, UART2 RX 4, LAN9118 13).
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn {
        0 => CONSOLE.on_interrupt(),
        4 => SIGNALS.on_interrupt(),
        13 => lan9118::on_interrupt(),
        _ => defmt::warn!("unexpected interrupt {}", irqn),
    }
}

relay_fw::board_tasks!(driver: Lan9118, console: UartRx<1024>, signals: signals::SignalPort);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    log::LOG_UART.enable(false);
    let p = defmt::unwrap!(cortex_m::Peripherals::take());
    time_driver::init(p.SYST);

    let mut store = storage::HostFiles;
    let cfg = tasks::load_config(DEFAULT_CONFIG, &mut store);
    let boot = tasks::boot_counter(&mut store);

    let driver = defmt::unwrap!(Lan9118::new(cfg.mac));
    relay_fw::measure::set_counter(lan9118::free_run, lan9118::FREE_RUN_NS);
    static NIC: StaticCell<Nic> = StaticCell::new();
    let nic: &'static Nic = NIC.init(SharedNic::new(driver));
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    // smoltcp's random seed (ephemeral ports): differs per relay and per boot
    let m = nic.mac();
    let seed =
        (u64::from(boot) << 48) ^ u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
    let (stack, runner) = embassy_net::new(
        nic.net_port(),
        relay_fw::net::stack_config(&cfg),
        RESOURCES.init(StackResources::new()),
        seed,
    );

    static RELAY: StaticCell<RelayCell> = StaticCell::new();
    let relay_cell: &'static RelayCell = RELAY.init(RelayCell::new(cfg, boot, nic.mac()));

    spawner.spawn(defmt::unwrap!(net(runner)));
    spawner.spawn(defmt::unwrap!(relay(nic, relay_cell)));
    spawner.spawn(defmt::unwrap!(arp(nic, stack, relay_cell)));
    spawner.spawn(defmt::unwrap!(console(CONSOLE.split(), relay_cell)));
    spawner.spawn(defmt::unwrap!(host_signals(
        signals::SignalPort::new(SIGNALS.split()),
        relay_cell
    )));

    // Interrupts last: every waker and pipe they touch exists now.
    for irq in [0, 4, lan9118::IRQ] {
        // SAFETY: the handlers only touch state initialised above.
        unsafe { cortex_m::peripheral::NVIC::unmask(Irq(irq)) };
    }
}
