//! Bring-up of the W5500 on SPI0 in MACRAW mode (embassy-net-wiznet).
use embassy_net_wiznet::{chip::W5500, Device, Runner, State};
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::interrupt::typelevel::{Binding, DMA_IRQ_0};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, PIN_16, PIN_17, PIN_18, PIN_19, PIN_20, PIN_21, SPI0};
use embassy_rp::spi::{self, Async, Spi};
use embassy_rp::{dma, Peri};
use embassy_time::Delay;
use embedded_hal_bus::spi::ExclusiveDevice;
use static_cell::StaticCell;

/// The W5500's SPI device: the bus with its chip select.
pub type SpiDev = ExclusiveDevice<Spi<'static, SPI0, Async>, Output<'static>, Delay>;

/// Reset the chip, put it in MACRAW mode with `mac`, and return the
/// embassy-net driver and the runner task's body. Halts (panic-probe) when
/// the chip does not answer: without it the relay has no way out.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    mac: [u8; 6],
    spi: Peri<'static, SPI0>,
    sck: Peri<'static, PIN_18>,
    mosi: Peri<'static, PIN_19>,
    miso: Peri<'static, PIN_16>,
    cs: Peri<'static, PIN_17>,
    int: Peri<'static, PIN_21>,
    rst: Peri<'static, PIN_20>,
    tx_dma: Peri<'static, DMA_CH0>,
    rx_dma: Peri<'static, DMA_CH1>,
    irqs: impl Binding<DMA_IRQ_0, dma::InterruptHandler<DMA_CH0>> + Binding<DMA_IRQ_0, dma::InterruptHandler<DMA_CH1>> + 'static,
) -> (Device<'static>, Runner<'static, W5500, SpiDev, Input<'static>, Output<'static>>) {
    let mut cfg = spi::Config::default();
    cfg.frequency = 50_000_000;
    let bus = Spi::new(spi, sck, mosi, miso, tx_dma, rx_dma, irqs, cfg);
    let dev = ExclusiveDevice::new(bus, Output::new(cs, Level::High), Delay).unwrap();
    static STATE: StaticCell<State<8, 8>> = StaticCell::new();
    embassy_net_wiznet::new(mac, STATE.init(State::new()), dev, Input::new(int, Pull::Up), Output::new(rst, Level::High))
        .await
        .unwrap()
}
