//! tvp-vmm's receive offloads (`offload.rs`) on hostile packets: the input's first 12
//! bytes are the vnet header the TAP device gave, the rest the packet. Invariants
//! beyond no panic:
//! - a packet refused is refused whole (nothing delivered from it);
//! - a TCP/IPv4 GSO packet split yields frames of the same headers' length plus at
//!   most `gso_size` payload bytes each, whose payloads put together are the packet's,
//!   each with valid IPv4 and TCP checksums;
//! - a header accepted for a driver that takes offloads has its checksum offsets
//!   inside the packet.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use tvp_vmm::offload::{check_pass_through, to_frames, VnetHdr, GSO_ECN, GSO_TCPV4, VNET_HDR_LEN};

/// The ones' complement sum over `parts` (RFC 1071), bytewise: 0xffff when a checksum
/// covering them is right.
fn sum(parts: &[&[u8]]) -> u64 {
    let mut s: u64 = 0;
    for p in parts {
        for (i, b) in p.iter().enumerate() {
            s += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

fuzz_target!(|data: &[u8]| {
    if data.len() < VNET_HDR_LEN {
        return;
    }
    let mut h = [0u8; VNET_HDR_LEN];
    h.copy_from_slice(&data[..VNET_HDR_LEN]);
    let hdr = VnetHdr::parse(&h);
    let packet = &data[VNET_HDR_LEN..];
    if check_pass_through(&hdr, packet.len()).is_ok() && hdr.flags & 1 != 0 {
        let end = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2;
        assert!(end <= packet.len(), "checksum field outside the packet");
    }
    let mut out = VecDeque::new();
    match to_frames(&hdr, packet, &mut out) {
        Err(_) => assert!(out.is_empty(), "frames delivered from a refused packet"),
        Ok(n) => {
            assert_eq!(n, out.len());
            if hdr.gso_type & !GSO_ECN == GSO_TCPV4 && packet.len() > 34 {
                let ihl = usize::from(packet[14] & 0x0f) * 4;
                let doff = usize::from(packet[14 + ihl + 12] >> 4) * 4;
                let data_at = 14 + ihl + doff;
                let mut payload = Vec::new();
                for f in &out {
                    assert!(f.len() >= data_at);
                    if packet.len() > data_at {
                        assert!(
                            f.len() - data_at <= usize::from(hdr.gso_size),
                            "segment over gso_size"
                        );
                    }
                    assert_eq!(sum(&[&f[14..14 + ihl]]), 0xffff, "IPv4 checksum");
                    let tcp_len = (f.len() - 14 - ihl) as u16;
                    let pseudo = [&f[26..34], &[0, 6][..], &tcp_len.to_be_bytes()[..]].concat();
                    assert_eq!(sum(&[&pseudo, &f[14 + ihl..]]), 0xffff, "TCP checksum");
                    payload.extend_from_slice(&f[data_at..]);
                }
                assert_eq!(payload, &packet[data_at..], "payload kept, in order, once");
            }
        }
    }
});
