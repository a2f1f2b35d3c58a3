//! Clock tree and identity of the board.
use embassy_stm32::rcc::*;
use embassy_stm32::Config;

/// 400 MHz core from the HSI through PLL1 (no crystal needed); buses at
/// 200/100 MHz, as the Ethernet MAC and USARTs expect.
pub fn config() -> Config {
    let mut config = Config::default();
    config.rcc.hsi = Some(HSIPrescaler::DIV1);
    config.rcc.csi = true;
    config.rcc.pll1 = Some(Pll {
        source: PllSource::HSI,
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL50,
        fracn: None,
        divp: Some(PllDiv::DIV2),
        divq: None,
        divr: None,
    });
    config.rcc.sys = Sysclk::PLL1_P;
    config.rcc.ahb_pre = AHBPrescaler::DIV2;
    config.rcc.apb1_pre = APBPrescaler::DIV2;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.apb3_pre = APBPrescaler::DIV2;
    config.rcc.apb4_pre = APBPrescaler::DIV2;
    config.rcc.voltage_scale = VoltageScale::Scale1;
    config
}

/// A stable, locally administered MAC derived from the chip's unique id.
pub fn mac_from_uid() -> [u8; 6] {
    let id = embassy_stm32::uid::uid();
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    for (i, b) in id.iter().enumerate() {
        mac[1 + i % 5] ^= b;
    }
    mac
}
