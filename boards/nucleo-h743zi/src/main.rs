//! lastgasp relay on a NUCLEO-H743ZI: wiring only; the relay is relay-fw +
//! relay-core. Ethernet: the on-board LAN8742A over RMII · host console:
//! USART2 RX on PD6 (CN9) · host signals: PF12 power good, PF13 CATERR#,
//! PF14 watchdog# (CN10) · storage: the top flash sectors · log: defmt over RTT.
#![no_std]
#![no_main]

mod clocks;
mod console;
mod storage;

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::gpio::Pull;
use embassy_stm32::mode::Async;
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::{bind_interrupts, dma, eth, flash::Flash, interrupt, peripherals, usart};
use panic_probe as _;
use relay_fw::flash_store::FlashStore;
use relay_fw::gpio_signals::GpioSignals;
use relay_fw::shared_nic::SharedNic;
use relay_fw::tasks::{self, RelayCell};
use static_cell::StaticCell;

type Eth = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;
type Nic = SharedNic<Eth>;
type Signals = GpioSignals<ExtiInput<'static, Async>, ExtiInput<'static, Async>, ExtiInput<'static, Async>>;

static DEFAULT_CONFIG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/config.bin"));

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    USART2 => usart::InterruptHandler<peripherals::USART2>;
    DMA1_STREAM0 => dma::InterruptHandler<peripherals::DMA1_CH0>;
    EXTI15_10 => exti::InterruptHandler<interrupt::typelevel::EXTI15_10>;
});

relay_fw::board_tasks!(driver: Eth, console: console::UartConsole, signals: Signals);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks::config());
    let mut store = FlashStore::new(Flash::new_blocking(p.FLASH), storage::LAYOUT);
    let cfg = tasks::load_config(DEFAULT_CONFIG, &mut store);
    let boot = tasks::boot_counter(&mut store);
    let mac = cfg.mac.unwrap_or_else(clocks::mac_from_uid);

    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let eth = Ethernet::new(
        PACKETS.init(PacketQueue::new()), p.ETH, Irqs, p.PA1, p.PA7, p.PC4, p.PC5, p.PG13, p.PB13, p.PG11, mac,
        p.ETH_SMA, p.PA2, p.PC1,
    );
    static NIC: StaticCell<Nic> = StaticCell::new();
    let nic: &'static Nic = NIC.init(SharedNic::new(eth));
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let seed = u64::from(boot) << 32 | u64::from(u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]));
    let (stack, runner) =
        embassy_net::new(nic.net_port(), relay_fw::net::stack_config(&cfg), RESOURCES.init(StackResources::new()), seed);

    let mut uart_cfg = usart::Config::default();
    uart_cfg.baudrate = 115_200;
    static DMA_BUF: StaticCell<[u8; 2048]> = StaticCell::new();
    let rx = usart::UartRx::new(p.USART2, p.PD6, p.DMA1_CH0, Irqs, uart_cfg).unwrap();
    let rx = console::UartConsole { rx: rx.into_ring_buffered(DMA_BUF.init([0; 2048])), errors: 0 };
    let sigs = GpioSignals {
        power: ExtiInput::new(p.PF12, p.EXTI12, Pull::None, Irqs),
        caterr: ExtiInput::new(p.PF13, p.EXTI13, Pull::Up, Irqs),
        watchdog: ExtiInput::new(p.PF14, p.EXTI14, Pull::Up, Irqs),
    };

    static RELAY: StaticCell<RelayCell> = StaticCell::new();
    let relay_cell: &'static RelayCell = RELAY.init(RelayCell::new(cfg, boot, nic.mac()));
    spawner.spawn(net(runner).unwrap());
    spawner.spawn(relay(nic, relay_cell).unwrap());
    spawner.spawn(arp(nic, stack, relay_cell).unwrap());
    spawner.spawn(console(rx, relay_cell).unwrap());
    spawner.spawn(host_signals(sigs, relay_cell).unwrap());
}
