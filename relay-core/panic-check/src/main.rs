//! Link-time proof that relay-core's public API is panic-free.
//!
//! Every public entry point is called on inputs the optimizer cannot see
//! through (`black_box`). The panic handler calls a function that is declared
//! but defined nowhere, so if any panic path survives optimisation the link
//! fails with `undefined reference to relay_core_panic_path_reachable`.
//! `cargo xtask panic-check` builds it; see relay-core/README.md.
//!
//! The binary is never run: `_start` only exists so the linker keeps the calls.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;

mod exercise;

#[cfg(not(feature = "locate"))]
extern "C" {
    /// Deliberately undefined: referencing it is the failure signal.
    fn relay_core_panic_path_reachable() -> !;
}

#[cfg(not(feature = "locate"))]
#[panic_handler]
fn on_panic(_: &PanicInfo<'_>) -> ! {
    // SAFETY: never linked, so never called; a reference to it fails the build.
    unsafe { relay_core_panic_path_reachable() }
}

/// With `--features locate` the binary links, and the functions that still
/// call into `core::panicking` show in `objdump -d`.
#[cfg(feature = "locate")]
#[panic_handler]
fn on_panic(_: &PanicInfo<'_>) -> ! {
    loop {
        black_box(());
    }
}

/// Entry point for the bare link (`-nostartfiles`, `-e _start`).
#[no_mangle]
pub extern "C" fn _start() -> ! {
    exercise::all();
    loop {
        black_box(());
    }
}

/// Linux x86_64 has no compiler-builtins `mem` feature (libc normally provides
/// these); bare targets get them from compiler_builtins instead.
#[cfg(target_os = "linux")]
mod mem {
    #[no_mangle]
    unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        let mut i = 0;
        while i < n {
            *d.add(i) = core::ptr::read_volatile(s.add(i));
            i += 1;
        }
        d
    }
    #[no_mangle]
    unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        if (d as usize) < (s as usize) {
            memcpy(d, s, n)
        } else {
            let mut i = n;
            while i > 0 {
                i -= 1;
                *d.add(i) = core::ptr::read_volatile(s.add(i));
            }
            d
        }
    }
    #[no_mangle]
    unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
        let mut i = 0;
        while i < n {
            core::ptr::write_volatile(d.add(i), c as u8);
            i += 1;
        }
        d
    }
    #[no_mangle]
    unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            let (x, y) = (core::ptr::read_volatile(a.add(i)), *b.add(i));
            if x != y {
                return x as i32 - y as i32;
            }
            i += 1;
        }
        0
    }
    #[no_mangle]
    unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        memcmp(a, b, n)
    }
}
