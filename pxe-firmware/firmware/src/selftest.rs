//! Test-only attacks on the stub from the CPL-3 firmware (feature `selftest`, never
//! in a measured image). Chosen by the configuration page's auth code
//! `selftest:<name>`; each must end in the stub's fault report, not in success.

use crate::println;

extern "C" {
    /// End of the stub's supervisor-only pages (link.ld).
    static __stub_end: u8;
}

/// Runs the attack named by `auth_code`, if any.
pub fn run(auth_code: &[u8]) {
    match auth_code {
        b"selftest:pt-write" => {
            println!("selftest: writing to the stub's supervisor-only pages");
            // SAFETY: deliberately invalid; the write must fault (#PF) and the stub
            // must report it and power off. Test builds only.
            unsafe {
                let p = (&raw const __stub_end).cast::<u8>().cast_mut().sub(8);
                core::ptr::write_volatile(p, 0xcc);
            }
            println!("selftest: FAILED, the write went through");
        }
        b"selftest:port" => {
            println!("selftest: writing to a port the I/O bitmap keeps closed");
            crate::port::outb(0x70, 0x8f);
            println!("selftest: FAILED, the port write went through");
        }
        b"selftest:handover" => {
            // A tiny CPL-0 workload: print "OK" on the serial port and power off.
            const CODE: [u8; 29] = [
                0x66, 0xba, 0xf8, 0x03, // mov $0x3f8, %dx
                0xb0, b'O', 0xee, // mov $'O', %al; out %al, %dx
                0xb0, b'K', 0xee, // mov $'K', %al; out %al, %dx
                0xb0, b'\n', 0xee, // mov $'\n', %al; out %al, %dx
                0x66, 0xba, 0x04, 0x06, // mov $0x604, %dx
                0x66, 0xb8, 0x00, 0x20, // mov $0x2000, %ax
                0x66, 0xef, // out %ax, %dx
                0xf4, // hlt
                0x90, 0x90, 0x90, 0x90, 0x90,
            ];
            // 8 MiB: RAM of every test VM, above the image.
            let at = 8u64 << 20;
            // SAFETY: [8 MiB, +29) is RAM the stub maps user read-write (heap area)
            // and nothing else uses it in this test flow.
            unsafe { core::ptr::copy_nonoverlapping(CODE.as_ptr(), at as *mut u8, CODE.len()) };
            println!("selftest: handing over to a CPL-0 workload at {at:#x}");
            crate::stub::handover(at, 0);
        }
        _ => {}
    }
}
