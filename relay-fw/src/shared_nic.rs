//! One NIC, two users, as Linux's netpoll does it: embassy-net drives the
//! NIC through [`NetPort`], and the relay puts its prebuilt last-gasp frames
//! straight onto the NIC's transmit queue with [`SharedNic::send`], without
//! going through the IP stack (no ARP, no routing, no socket buffers).
//!
//! Works over any [`embassy_net_driver::Driver`]. Received frames are copied
//! once into the wrapper's buffer before the stack sees them, because
//! smoltcp sends replies from inside the receive callback and the inner
//! driver cannot be borrowed twice; on the way the ARP frames are inspected
//! to keep the collectors' MACs current ([`NeighbourWatch`]).
use core::cell::RefCell;
use core::task::{Context, Waker};

use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_sync::waitqueue::WakerRegistration;
use embassy_time::Timer;

use crate::arp::NeighbourWatch;

/// Largest frame passed through (Ethernet + 802.1Q + 1500 MTU).
pub const FRAME_MAX: usize = 1518;

struct Inner<D> {
    driver: D,
    /// The IP stack's waker: a poll with another context (the relay's) may
    /// have replaced it inside the driver, so the stack is woken to re-poll.
    net_waker: WakerRegistration,
    direct_sent: u32,
    direct_busy: u32,
}

/// A NIC shared by the IP stack and the relay. Lives in a `StaticCell`.
pub struct SharedNic<D: Driver> {
    inner: Mutex<NoopRawMutex, RefCell<Inner<D>>>,
    rx_buf: Mutex<NoopRawMutex, RefCell<[u8; FRAME_MAX]>>,
    watch: Mutex<NoopRawMutex, RefCell<NeighbourWatch>>,
    /// Signalled when a watched neighbour's MAC changed.
    pub neighbour_changed: Signal<NoopRawMutex, ()>,
}

fn noop_cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl<D: Driver> SharedNic<D> {
    /// Wrap a driver.
    pub fn new(driver: D) -> Self {
        Self {
            inner: Mutex::new(RefCell::new(Inner {
                driver,
                net_waker: WakerRegistration::new(),
                direct_sent: 0,
                direct_busy: 0,
            })),
            rx_buf: Mutex::new(RefCell::new([0; FRAME_MAX])),
            watch: Mutex::new(RefCell::new(NeighbourWatch::default())),
            neighbour_changed: Signal::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<D>) -> R) -> R {
        self.inner.lock(|c| f(&mut c.borrow_mut()))
    }

    /// The port embassy-net drives.
    pub fn net_port(&self) -> NetPort<'_, D> {
        NetPort(self)
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        match self.with(|i| i.driver.hardware_address()) {
            HardwareAddress::Ethernet(m) => m,
            #[allow(unreachable_patterns)]
            _ => [0; 6],
        }
    }

    /// Put one complete Ethernet frame on the NIC's transmit queue now;
    /// false when the queue is full.
    pub fn try_send(&self, frame: &[u8]) -> bool {
        let sent = self.with(|i| {
            let ok = match i.driver.transmit(&mut noop_cx()) {
                Some(tok) => {
                    tok.consume(frame.len(), |b| b.copy_from_slice(frame));
                    true
                }
                None => false,
            };
            if ok {
                i.direct_sent = i.direct_sent.wrapping_add(1);
            } else {
                i.direct_busy = i.direct_busy.wrapping_add(1);
            }
            i.net_waker.wake();
            ok
        });
        sent
    }

    /// Send one frame, waiting (a tick at a time) while the queue is full.
    pub async fn send(&self, frame: &[u8]) {
        while !self.try_send(frame) {
            Timer::after_millis(1).await;
        }
    }

    /// (frames sent directly, times the queue was full) since boot.
    pub fn direct_stats(&self) -> (u32, u32) {
        self.with(|i| (i.direct_sent, i.direct_busy))
    }

    /// Start tracking the MAC of `ip`.
    pub fn watch(&self, ip: [u8; 4]) -> bool {
        self.watch.lock(|w| w.borrow_mut().watch(ip))
    }

    /// The MAC last seen for a watched `ip`.
    pub fn neighbour(&self, ip: [u8; 4]) -> Option<[u8; 6]> {
        self.watch.lock(|w| w.borrow().lookup(ip))
    }
}

/// The [`Driver`] handed to embassy-net.
pub struct NetPort<'a, D: Driver>(&'a SharedNic<D>);

/// A received frame; read out of the NIC when consumed.
pub struct SharedRx<'a, D: Driver>(&'a SharedNic<D>);
/// Permission to transmit one frame.
pub struct SharedTx<'a, D: Driver>(&'a SharedNic<D>);

impl<D: Driver> RxToken for SharedRx<'_, D> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        let nic = self.0;
        nic.rx_buf.lock(|b| {
            let mut buf = b.borrow_mut();
            let n = nic.with(|i| match i.driver.receive(&mut noop_cx()) {
                Some((rx, _)) => rx.consume(|frame| {
                    let n = frame.len().min(FRAME_MAX);
                    buf[..n].copy_from_slice(&frame[..n]);
                    n
                }),
                None => 0,
            });
            let frame = &mut buf[..n];
            if nic.watch.lock(|w| w.borrow_mut().inspect(frame)) {
                nic.neighbour_changed.signal(());
            }
            f(frame)
        })
    }
}

#[inline(never)]
#[cold]
fn tx_fallback<R, F: FnOnce(&mut [u8]) -> R>(len: usize, f: F) -> R {
    // The driver granted this token a moment ago and nothing ran in between,
    // so this only happens with a driver that breaks that promise: the frame
    // is built and dropped rather than panicking.
    let mut scratch = [0u8; FRAME_MAX];
    f(&mut scratch[..len.min(FRAME_MAX)])
}

impl<D: Driver> TxToken for SharedTx<'_, D> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let res = self.0.with(|i| match i.driver.transmit(&mut noop_cx()) {
            Some(tok) => Ok(tok.consume(len, f)),
            None => Err(f),
        });
        match res {
            Ok(r) => r,
            Err(f) => tx_fallback(len, f),
        }
    }
}

impl<D: Driver> Driver for NetPort<'_, D> {
    type RxToken<'a>
        = SharedRx<'a, D>
    where
        Self: 'a;
    type TxToken<'a>
        = SharedTx<'a, D>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(SharedRx<'_, D>, SharedTx<'_, D>)> {
        let nic = self.0;
        let ready = nic.with(|i| {
            i.net_waker.register(cx.waker());
            i.driver.receive(cx).is_some()
        });
        ready.then_some((SharedRx(nic), SharedTx(nic)))
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<SharedTx<'_, D>> {
        let nic = self.0;
        let ready = nic.with(|i| {
            i.net_waker.register(cx.waker());
            i.driver.transmit(cx).is_some()
        });
        ready.then_some(SharedTx(nic))
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        self.0.with(|i| i.driver.link_state(cx))
    }

    fn capabilities(&self) -> Capabilities {
        self.0.with(|i| i.driver.capabilities())
    }

    fn hardware_address(&self) -> HardwareAddress {
        self.0.with(|i| i.driver.hardware_address())
    }
}
