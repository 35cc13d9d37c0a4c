//! Linux bundles (seed: the project's test bzImage from
//! `scripts/build-test-workload.sh`, bundled with a command line and an initrd as
//! `tvp-boot-server sign-workload --kernel` does) through `parse_bundle`, `layout` and
//! `zero_page`, in a 32 MiB window or (first byte odd) a 4 GiB one. Invariants beyond no
//! panic: the bundle re-encodes to its bytes; the zero page, command line, kernel (with
//! its `init_size`) and initrd are placed inside the window without overlapping, at the
//! kernel's alignment, below `initrd_addr_max` unless the kernel may load above 4 GiB;
//! the zero page points at them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_boot_protocol::linux::{bundle_header, layout, parse_bundle, zero_page, ENTRY_64};
use tvp_boot_protocol_fuzz::{u16_at, u32_at};

fuzz_target!(|data: &[u8]| {
    let Some((&w, bytes)) = data.split_first() else {
        return;
    };
    let Ok(b) = parse_bundle(bytes) else {
        return;
    };
    let mut again = bundle_header(b.cmdline.len(), b.initrd.len(), b.kernel.len())
        .unwrap()
        .to_vec();
    again.extend_from_slice(b.cmdline);
    again.extend_from_slice(b.initrd);
    again.extend_from_slice(b.kernel);
    assert_eq!(again, bytes, "bundle does not re-encode to its bytes");
    let (start, end) = if w & 1 == 0 {
        (0x200_0000u64, 0x400_0000u64)
    } else {
        (0x200_0000u64, 0x1_0000_0000u64)
    };
    let Ok(l) = layout(&b, start, end) else {
        return;
    };
    let k = b.kernel;
    let align = u64::from(u32_at(k, 0x230).unwrap());
    let init_size = u64::from(u32_at(k, 0x260).unwrap());
    let xload = u16_at(k, 0x236).unwrap();
    assert_eq!(l.boot_params, start);
    assert!(l.cmdline >= l.boot_params + 4096);
    assert!(
        l.cmdline + (b.cmdline.len() as u64) < l.kernel,
        "command line meets the kernel"
    );
    assert!(l.kernel % align == 0 && align >= 4096);
    assert!(l.kernel_offset < k.len());
    let kernel_end = l.kernel + ((k.len() - l.kernel_offset) as u64).max(init_size);
    assert!(
        kernel_end <= l.initrd,
        "kernel or its init_size meets the initrd"
    );
    assert!(l.initrd % 4096 == 0);
    assert!(
        l.initrd + b.initrd.len() as u64 <= end,
        "initrd beyond the window"
    );
    if xload & 2 == 0 && !b.initrd.is_empty() {
        let max = u64::from(u32_at(k, 0x22c).unwrap());
        assert!(
            l.initrd + b.initrd.len() as u64 <= max + 1,
            "initrd above initrd_addr_max"
        );
    }
    assert_eq!(l.entry, l.kernel + ENTRY_64);
    let p = zero_page(&b, &l, &[(0, 0x9f000, 1), (0x10_0000, end - 0x10_0000, 1)]);
    assert_eq!(p[0x210], 0xff);
    assert_eq!(u32_at(&p, 0x228), Some(l.cmdline as u32));
    if !b.initrd.is_empty() {
        assert_eq!(u32_at(&p, 0x218), Some(l.initrd as u32));
        assert_eq!(u32_at(&p, 0x21c), Some(b.initrd.len() as u32));
    }
    assert_eq!(p[0x1e8], 2);
});
