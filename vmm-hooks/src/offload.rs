//! Receive offloads of the TAP device (issue #18, "fewer, bigger frames"): the TAP is
//! opened with `IFF_VNET_HDR` and `TUN_F_CSUM | TUN_F_TSO4`, so the host's TCP hands
//! tvp-vmm whole TSO segments (up to 64 KiB, one `read`) instead of one 1514-byte frame
//! per `read`, and skips checksums nobody checks on the way. The guest's device offers
//! no offloads, so this module turns each packet into what such a guest takes: a
//! partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) is completed, and a TCP/IPv4 GSO
//! packet is split into `gso_size` segments, each with its own IPv4 length, id and
//! checksum, TCP sequence number, flags and checksum (what the kernel's own software
//! segmentation does).
//!
//! The packets come from the host kernel, but they are still bounded and validated:
//! headers that do not parse, offsets outside the packet, GSO types other than TCPv4
//! or more than [`MAX_SEGMENTS`] segments are refused with an [`OffloadError`] (the
//! packet is dropped and counted), never a panic.

use std::collections::VecDeque;

/// `struct virtio_net_hdr_v1` as the TAP device reads and writes it (`TUNSETVNETHDRSZ`
/// 12, the same layout as the guest's).
pub const VNET_HDR_LEN: usize = 12;
/// `flags`: the checksum from `csum_start` to the end is to be completed, stored at
/// `csum_start + csum_offset` (which holds the pseudo-header's sum).
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was already validated.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type` bit: the segments carry ECN (CWR only on the first).
pub const GSO_ECN: u8 = 0x80;
/// Most segments one packet may yield (64 KiB of payload at the smallest MSS Linux
/// sends, 88 bytes, is 745).
pub const MAX_SEGMENTS: usize = 1024;
/// Largest packet the TAP device hands over with TSO (an IPv4 packet of 64 KiB and its
/// Ethernet header, VLAN tag included).
pub const PACKET_MAX: usize = 14 + 4 + 65535;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The fields of a vnet header this module reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed range starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where in that range the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `b` (little-endian, virtio 1.x).
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }
}

impl VnetHdr {
    /// The header as the guest's driver reads it (`num_buffers` 1).
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&1u16.to_le_bytes());
        b
    }
}

/// Checks a packet the guest's driver takes as it is (it negotiated `GUEST_CSUM` and
/// `GUEST_TSO4`): a GSO type it accepts (none or TCPv4), only the flags the spec
/// defines, checksum offsets inside the packet, a segment size for a GSO packet.
pub fn check_pass_through(hdr: &VnetHdr, len: usize) -> Result<(), OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {}
        GSO_TCPV4 if hdr.gso_size > 0 => {}
        GSO_TCPV4 => {
            return Err(OffloadError::BadSegmentSize {
                gso_size: 0,
                payload: len,
            })
        }
        other => return Err(OffloadError::UnsupportedGso(other)),
    }
    if hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err(OffloadError::UnknownFlags(hdr.flags));
    }
    let (s, o) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
    if hdr.flags & F_NEEDS_CSUM != 0 && (s > len || s + o + 2 > len) {
        return Err(OffloadError::ChecksumOutside {
            start: hdr.csum_start,
            offset: hdr.csum_offset,
            len,
        });
    }
    Ok(())
}

/// Why a packet from the TAP device was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The checksum offsets point outside the packet.
    #[error("checksum offsets {start}+{offset} outside a {len}-byte packet")]
    ChecksumOutside { start: u16, offset: u16, len: usize },
    /// A GSO type other than TCPv4 (never asked for with `TUNSETOFFLOAD`).
    #[error("GSO type {0:#x} not offered")]
    UnsupportedGso(u8),
    /// Header flags the virtio spec does not define.
    #[error("unknown vnet header flags {0:#x}")]
    UnknownFlags(u8),
    /// A TCPv4 GSO packet whose Ethernet, IPv4 or TCP header does not parse.
    #[error("TCPv4 GSO packet with malformed headers: {0}")]
    Malformed(&'static str),
    /// A segment size of 0, or one that would make more than [`MAX_SEGMENTS`].
    #[error("GSO segment size {gso_size} for {payload} payload bytes")]
    BadSegmentSize { gso_size: u16, payload: usize },
}

/// Turns `packet` (an Ethernet frame as the TAP device read it, described by `hdr`)
/// into the frames a guest without offloads takes, appended to `out`; how many.
pub fn to_frames(
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut VecDeque<Vec<u8>>,
) -> Result<usize, OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let mut frame = packet.to_vec();
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(&mut frame, hdr.csum_start, hdr.csum_offset)?;
            }
            out.push_back(frame);
            Ok(1)
        }
        GSO_TCPV4 => segment_tcpv4(packet, hdr.gso_size, out),
        other => Err(OffloadError::UnsupportedGso(other)),
    }
}

/// Completes a partial checksum: the ones' complement of the sum from `start` to the
/// end (the field at `start + offset` holds the pseudo-header's sum, as Linux leaves
/// it), stored at `start + offset`.
fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), OffloadError> {
    let (s, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if s > frame.len() || at + 2 > frame.len() {
        return Err(OffloadError::ChecksumOutside {
            start,
            offset,
            len: frame.len(),
        });
    }
    let sum = fold(sum16(0, &frame[s..]));
    frame[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

/// Splits a TCP/IPv4 GSO packet into segments of at most `mss` payload bytes.
fn segment_tcpv4(
    packet: &[u8],
    mss: u16,
    out: &mut VecDeque<Vec<u8>>,
) -> Result<usize, OffloadError> {
    use OffloadError::Malformed;
    if packet.len() < ETH_HLEN + 20 + 20 {
        return Err(Malformed("shorter than its headers"));
    }
    if u16::from_be_bytes([packet[12], packet[13]]) != ETHERTYPE_IPV4 {
        return Err(Malformed("not an IPv4 frame"));
    }
    let ip = ETH_HLEN;
    if packet[ip] >> 4 != 4 {
        return Err(Malformed("IP version is not 4"));
    }
    let ihl = usize::from(packet[ip] & 0x0f) * 4;
    if ihl < 20 || packet[ip + 9] != IPPROTO_TCP {
        return Err(Malformed("IPv4 header length or protocol"));
    }
    let tcp = ip + ihl;
    let doff = packet.get(tcp + 12).map_or(0, |b| usize::from(b >> 4) * 4);
    if doff < 20 || tcp + doff > packet.len() {
        return Err(Malformed("TCP header length"));
    }
    let data = tcp + doff;
    let payload = packet.len() - data;
    let mss = usize::from(mss);
    if mss == 0 || payload.div_ceil(mss) > MAX_SEGMENTS || ihl + doff + mss.min(payload) > 0xffff {
        return Err(OffloadError::BadSegmentSize {
            gso_size: mss as u16,
            payload,
        });
    }
    let id = u16::from_be_bytes([packet[ip + 4], packet[ip + 5]]);
    let seq = u32::from_be_bytes([
        packet[tcp + 4],
        packet[tcp + 5],
        packet[tcp + 6],
        packet[tcp + 7],
    ]);
    let flags = packet[tcp + 13];
    let mut chunks = packet[data..].chunks(mss).peekable();
    let mut n = 0usize;
    // A GSO packet without payload (a bare ACK should never be one) is passed on whole.
    if payload == 0 {
        let mut frame = packet.to_vec();
        finish_segment(&mut frame, ihl);
        out.push_back(frame);
        return Ok(1);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut frame = Vec::with_capacity(data + chunk.len());
        frame.extend_from_slice(&packet[..data]);
        frame.extend_from_slice(chunk);
        let total = (ihl + doff + chunk.len()) as u16;
        frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        frame[ip + 4..ip + 6].copy_from_slice(&id.wrapping_add(n as u16).to_be_bytes());
        let s = seq.wrapping_add((n * mss) as u32);
        frame[tcp + 4..tcp + 8].copy_from_slice(&s.to_be_bytes());
        let mut f = flags;
        if !last {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if n > 0 {
            f &= !TCP_CWR;
        }
        frame[tcp + 13] = f;
        finish_segment(&mut frame, ihl);
        out.push_back(frame);
        n += 1;
    }
    Ok(n)
}

/// Writes a TCP/IPv4 segment's IPv4 header checksum and its TCP checksum (over the
/// pseudo-header, the TCP header and the payload).
fn finish_segment(frame: &mut [u8], ihl: usize) {
    let ip = ETH_HLEN;
    let tcp = ip + ihl;
    frame[ip + 10..ip + 12].fill(0);
    let ip_sum = !fold(sum16(0, &frame[ip..tcp]));
    frame[ip + 10..ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_len = frame.len() - tcp;
    frame[tcp + 16..tcp + 18].fill(0);
    let mut pseudo = sum16(0, &frame[ip + 12..ip + 20]);
    pseudo += u32::from(IPPROTO_TCP) + tcp_len as u32;
    let tcp_sum = !fold(sum16(pseudo, &frame[tcp..]));
    frame[tcp + 16..tcp + 18].copy_from_slice(&tcp_sum.to_be_bytes());
}

/// Adds `b` as big-endian 16-bit words (a last odd byte padded with zero) to `acc`,
/// with deferred carries (folded by [`fold`]; 64 KiB of words cannot overflow 32 bits
/// past a few folds, so this folds as it goes).
fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    let mut words = b.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
        if acc >= 0x8000_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a 32-bit sum of 16-bit words into 16 bits (end-around carry).
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An independent check of an Internet checksum: the ones' complement sum of the
    /// covered bytes, checksum included, is 0xffff (RFC 1071), computed bytewise.
    fn verifies(pseudo: &[u8], covered: &[u8]) -> bool {
        let mut sum: u64 = 0;
        for part in [pseudo, covered] {
            for (i, b) in part.iter().enumerate() {
                sum += if i % 2 == 0 {
                    u64::from(*b) << 8
                } else {
                    u64::from(*b)
                };
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    /// A TCP/IPv4 GSO packet as the host's TCP hands it over: `payload` bytes from
    /// sequence number 1000, IPv4 id 7, flags PSH|ACK|FIN|CWR, checksums not filled in.
    pub(crate) fn gso_packet(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; ETH_HLEN + 20 + 32];
        p[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        p[14] = 0x45;
        p[18..20].copy_from_slice(&7u16.to_be_bytes());
        p[20] = 0x40; // DF
        p[22] = 64;
        p[23] = IPPROTO_TCP;
        p[26..30].copy_from_slice(&[10, 0, 0, 1]);
        p[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let t = 34;
        p[t..t + 2].copy_from_slice(&8443u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&49152u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&1000u32.to_be_bytes());
        p[t + 12] = 8 << 4; // 32-byte header (timestamps)
        p[t + 13] = TCP_PSH | 0x10 | TCP_FIN | TCP_CWR;
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend((0..payload).map(|i| (i * 7 + 3) as u8));
        p
    }

    pub(crate) fn gso(mss: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn a_tso_packet_becomes_mss_segments_with_valid_headers() {
        let packet = gso_packet(5000);
        let mut out = VecDeque::new();
        assert_eq!(to_frames(&gso(1448), &packet, &mut out), Ok(4));
        let mut joined = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let len = if i < 3 { 1448 } else { 5000 - 3 * 1448 };
            assert_eq!(f.len(), ETH_HLEN + 20 + 32 + len, "segment {i}");
            assert_eq!(&f[..14], &packet[..14]);
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, 20 + 32 + len);
            assert_eq!(u16::from_be_bytes([f[18], f[19]]), 7 + i as u16);
            assert!(verifies(&[], &f[14..34]), "IPv4 checksum of segment {i}");
            let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            let flags = f[47];
            assert_eq!(flags & TCP_FIN != 0, i == 3, "FIN only on the last");
            assert_eq!(flags & TCP_PSH != 0, i == 3, "PSH only on the last");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
            assert_eq!(flags & 0x10, 0x10, "ACK on every segment");
            let mut pseudo = f[26..34].to_vec();
            pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
            pseudo.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
            assert!(verifies(&pseudo, &f[34..]), "TCP checksum of segment {i}");
            assert_eq!(
                &f[34 + 20..34 + 32],
                &packet[34 + 20..34 + 32],
                "options kept"
            );
            joined.extend_from_slice(&f[66..]);
        }
        assert_eq!(joined, &packet[66..], "the payload, in order, once");
    }

    #[test]
    fn a_payload_of_exactly_n_segments_has_no_empty_tail() {
        let mut out = VecDeque::new();
        assert_eq!(to_frames(&gso(1000), &gso_packet(3000), &mut out), Ok(3));
        assert!(out.iter().all(|f| f.len() == 66 + 1000));
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        // A UDP datagram as Linux leaves it with checksum offload: the field holds
        // the pseudo-header's folded sum.
        let mut f = vec![0u8; 14 + 20 + 8 + 11];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[38..40].copy_from_slice(&19u16.to_be_bytes());
        f[42..].copy_from_slice(b"hello world");
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 19]);
        let partial = fold(sum16(0, &pseudo));
        f[40..42].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let mut out = VecDeque::new();
        assert_eq!(to_frames(&hdr, &f, &mut out), Ok(1));
        assert!(verifies(&pseudo, &out[0][34..]));
        assert_eq!(&out[0][..40], &f[..40]);
    }

    #[test]
    fn a_plain_frame_passes_unchanged() {
        let f = gso_packet(100);
        let mut out = VecDeque::new();
        assert_eq!(to_frames(&VnetHdr::default(), &f, &mut out), Ok(1));
        assert_eq!(out[0], f);
    }

    #[test]
    fn bogus_headers_are_refused_not_trusted() {
        let p = gso_packet(3000);
        let mut out = VecDeque::new();
        let mut h = gso(0);
        assert!(matches!(
            to_frames(&h, &p, &mut out),
            Err(OffloadError::BadSegmentSize { .. })
        ));
        h.gso_size = 2; // 1500 segments
        assert!(matches!(
            to_frames(&h, &p, &mut out),
            Err(OffloadError::BadSegmentSize { .. })
        ));
        h.gso_type = 4; // TCPv6, never offered
        assert_eq!(
            to_frames(&h, &p, &mut out),
            Err(OffloadError::UnsupportedGso(4))
        );
        let csum = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: u16::MAX,
            ..VnetHdr::default()
        };
        assert!(matches!(
            to_frames(&csum, &p, &mut out),
            Err(OffloadError::ChecksumOutside { .. })
        ));
        let mut q = p.clone();
        q[14] = 0x44; // IHL 16 bytes
        assert!(matches!(
            to_frames(&gso(1448), &q, &mut out),
            Err(OffloadError::Malformed(_))
        ));
        let mut q = p.clone();
        q[23] = 17; // UDP under a TCPv4 GSO type
        assert!(matches!(
            to_frames(&gso(1448), &q, &mut out),
            Err(OffloadError::Malformed(_))
        ));
        let mut q = p.clone();
        q[46] = 15 << 4; // TCP header past the end of a short packet
        q.truncate(80);
        assert!(matches!(
            to_frames(&gso(1448), &q, &mut out),
            Err(OffloadError::Malformed(_))
        ));
        assert!(out.is_empty(), "nothing delivered from a refused packet");
    }

    #[test]
    fn a_pass_through_header_is_checked_and_kept() {
        let p = gso_packet(3000);
        let h = gso(1448);
        assert_eq!(check_pass_through(&h, p.len()), Ok(()));
        let b = h.to_bytes();
        assert_eq!(VnetHdr::parse(&b), h);
        assert_eq!(&b[10..12], &[1, 0], "num_buffers 1");
        assert!(check_pass_through(&gso(0), p.len()).is_err());
        assert!(check_pass_through(&VnetHdr { gso_type: 3, ..h }, p.len()).is_err());
        assert!(check_pass_through(&VnetHdr { flags: 0x84, ..h }, p.len()).is_err());
        assert!(check_pass_through(
            &VnetHdr {
                csum_start: 3060,
                ..h
            },
            p.len()
        )
        .is_err());
        assert!(check_pass_through(
            &VnetHdr {
                csum_offset: 60000,
                ..h
            },
            p.len()
        )
        .is_err());
        assert_eq!(check_pass_through(&VnetHdr::default(), 60), Ok(()));
    }

    #[test]
    fn every_truncation_and_header_byte_is_harmless() {
        let p = gso_packet(2000);
        let mut out = VecDeque::new();
        for len in 0..p.len() {
            let _ = to_frames(&gso(536), &p[..len], &mut out);
            let _ = to_frames(
                &VnetHdr {
                    csum_start: len as u16,
                    csum_offset: 3,
                    flags: F_NEEDS_CSUM,
                    ..VnetHdr::default()
                },
                &p[..len],
                &mut out,
            );
        }
        for at in 0..66 {
            for v in [0u8, 0x0f, 0x45, 0xf0, 0xff] {
                let mut q = p.clone();
                q[at] = v;
                let _ = to_frames(&gso(1), &q, &mut out);
                let _ = to_frames(&gso(1448), &q, &mut out);
            }
        }
        assert!(out.iter().all(|f| f.len() <= p.len()));
    }
}
