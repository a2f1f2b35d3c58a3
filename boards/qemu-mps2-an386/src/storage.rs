//! Persistent storage of the emulated board: files on the host, reached
//! through semihosting (QEMU runs with `-semihosting-config enable=on`).
//! The files live in QEMU's working directory, so they persist across
//! restarts of the board there, like a BMC's flash.
use cortex_m_semihosting::syscall;
use relay_fw::board::PersistentStore;

/// Where the boot counter is kept (4 bytes, little endian).
const COUNTER_FILE: &[u8] = b"lastgasp-boot-counter\0";
/// A postcard config blob that overrides the built-in one, when present.
const CONFIG_FILE: &[u8] = b"lastgasp-config.bin\0";

const MODE_RB: usize = 1;
const MODE_WB: usize = 5;

/// Semihosting-backed storage.
pub struct HostFiles;

fn open(name: &[u8], mode: usize) -> Option<usize> {
    // SAFETY: name is NUL-terminated; the length excludes the NUL as the
    // semihosting OPEN call requires.
    let fd = unsafe { syscall!(OPEN, name.as_ptr(), mode, name.len() - 1) };
    (fd as isize >= 0).then_some(fd)
}

fn read(fd: usize, buf: &mut [u8]) -> usize {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let left = unsafe { syscall!(READ, fd, buf.as_mut_ptr(), buf.len()) };
    buf.len().saturating_sub(left)
}

fn write(fd: usize, buf: &[u8]) -> bool {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    unsafe { syscall!(WRITE, fd, buf.as_ptr(), buf.len()) == 0 }
}

fn close(fd: usize) {
    // SAFETY: fd came from OPEN.
    unsafe { syscall!(CLOSE, fd) };
}

impl PersistentStore for HostFiles {
    fn next_boot_counter(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        let prev = match open(COUNTER_FILE, MODE_RB) {
            Some(fd) => {
                let n = read(fd, &mut b);
                close(fd);
                if n == 4 {
                    u32::from_le_bytes(b)
                } else {
                    0
                }
            }
            None => 0,
        };
        let next = prev.wrapping_add(1);
        let fd = open(COUNTER_FILE, MODE_WB)?;
        let ok = write(fd, &next.to_le_bytes());
        close(fd);
        ok.then_some(next)
    }

    fn load_config(&mut self, buf: &mut [u8]) -> Option<usize> {
        let fd = open(CONFIG_FILE, MODE_RB)?;
        let n = read(fd, buf);
        close(fd);
        (n > 0).then_some(n)
    }
}
