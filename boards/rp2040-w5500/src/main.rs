//! lastgasp relay on a W5500-EVB-Pico (RP2040 + WIZnet W5500): a cheap
//! console relay dongle. Wiring only; the relay is relay-fw + relay-core.
//! W5500 on SPI0 (GP16-19, INT GP21, RST GP20) in MACRAW mode · host console:
//! UART1 RX on GP5 · host signals: GP2 power good, GP3 CATERR#, GP4
//! watchdog# · storage: the last flash sectors · log: defmt over RTT.
#![no_std]
#![no_main]

mod console;
mod storage;
mod w5500;

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_net_wiznet::{chip::W5500, Device};
use embassy_rp::flash::Flash;
use embassy_rp::gpio::{Input, Output, Pull};
use embassy_rp::peripherals::UART1;
use embassy_rp::{bind_interrupts, dma, uart};
use panic_probe as _;
use relay_fw::flash_store::FlashStore;
use relay_fw::gpio_signals::GpioSignals;
use relay_fw::shared_nic::SharedNic;
use relay_fw::tasks::{self, RelayCell};
use static_cell::StaticCell;

type Nic = SharedNic<Device<'static>>;
type Signals = GpioSignals<Input<'static>, Input<'static>, Input<'static>>;

static DEFAULT_CONFIG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/config.bin"));

bind_interrupts!(struct Irqs {
    UART1_IRQ => uart::BufferedInterruptHandler<UART1>;
    DMA_IRQ_0 => dma::InterruptHandler<embassy_rp::peripherals::DMA_CH0>, dma::InterruptHandler<embassy_rp::peripherals::DMA_CH1>;
});

#[embassy_executor::task]
async fn wiznet(runner: embassy_net_wiznet::Runner<'static, W5500, w5500::SpiDev, Input<'static>, Output<'static>>) -> ! {
    runner.run().await
}

relay_fw::board_tasks!(driver: Device<'static>, console: console::UartConsole, signals: Signals);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let mut store = FlashStore::new(Flash::<_, _, { storage::FLASH_SIZE }>::new_blocking(p.FLASH), storage::LAYOUT);
    let cfg = tasks::load_config(DEFAULT_CONFIG, &mut store);
    let boot = tasks::boot_counter(&mut store);
    // The W5500 has no MAC of its own: the config's, else one from the flash's unique id.
    let mut uid = [0u8; 8];
    let _ = store.flash.blocking_unique_id(&mut uid);
    let mac = cfg.mac.unwrap_or([0x02, uid[3], uid[4], uid[5], uid[6], uid[7]]);

    let (device, wiz_runner) =
        w5500::start(mac, p.SPI0, p.PIN_18, p.PIN_19, p.PIN_16, p.PIN_17, p.PIN_21, p.PIN_20, p.DMA_CH0, p.DMA_CH1, Irqs).await;
    spawner.spawn(wiznet(wiz_runner).unwrap());

    static NIC: StaticCell<Nic> = StaticCell::new();
    let nic: &'static Nic = NIC.init(SharedNic::new(device));
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let seed = u64::from(boot) << 32 | u64::from(embassy_time::Instant::now().as_ticks() as u32);
    let (stack, runner) =
        embassy_net::new(nic.net_port(), relay_fw::net::stack_config(&cfg), RESOURCES.init(StackResources::new()), seed);

    let mut uart_cfg = uart::Config::default();
    uart_cfg.baudrate = 115_200;
    static RX_BUF: StaticCell<[u8; 2048]> = StaticCell::new();
    let rx = uart::BufferedUartRx::new(p.UART1, Irqs, p.PIN_5, RX_BUF.init([0; 2048]), uart_cfg);
    let sigs = GpioSignals {
        power: Input::new(p.PIN_2, Pull::None),
        caterr: Input::new(p.PIN_3, Pull::Up),
        watchdog: Input::new(p.PIN_4, Pull::Up),
    };

    static RELAY: StaticCell<RelayCell> = StaticCell::new();
    let relay_cell: &'static RelayCell = RELAY.init(RelayCell::new(cfg, boot, nic.mac()));
    spawner.spawn(net(runner).unwrap());
    spawner.spawn(relay(nic, relay_cell).unwrap());
    spawner.spawn(arp(nic, stack, relay_cell).unwrap());
    spawner.spawn(console(console::UartConsole { rx, errors: 0 }, relay_cell).unwrap());
    spawner.spawn(host_signals(sigs, relay_cell).unwrap());
}
