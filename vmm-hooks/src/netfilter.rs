//! Source filtering of the frames a VM transmits, so that it cannot pose as another VM,
//! the gateway or the boot server on the shared bridge.
//!
//! Always: the Ethernet source MAC (and an ARP packet's sender MAC) must be the VM's MAC
//! from the configuration page, and VLAN-tagged frames are dropped (a VM sits on an
//! access port). IPv4 and ARP must come from the VM's VIP (the configuration page's
//! address; the firmware configures it statically, there is no DHCP).
//!
//! Boot phase (until the mailbox handover): only IPv4 and ARP pass, and only from the
//! VIP. After the handover the workload may also send from `0.0.0.0` (DHCP discovery,
//! ARP probes: they claim no one's address), IPv6 and other EtherTypes (filtered by MAC
//! only); `docs/vmm-boot.md` states what remains.
//!
//! IPv6 (after the handover) is held to the VM's MAC as IPv4 is to its VIP: the source
//! address is one whose interface identifier is the MAC's modified EUI-64 (its
//! link-local `fe80::…` and SLAAC addresses), or `::` for duplicate address detection
//! and MLD; neighbour advertisements and solicitations name only such an address as
//! their target and only the VM's MAC as their link-layer address; router
//! advertisements and redirects are dropped (a VM is not the router). Without this a
//! workload could answer for the gateway's or another VM's IPv6 address.
//!
//! Every drop is counted by reason; logging is rate-limited per reason (a few lines per
//! window, then a count of the suppressed ones), so a flooding guest cannot flood the log.

use std::fmt;
use std::time::{Duration, Instant};

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_LEN: usize = 28;
const IPV4_MIN: usize = 20;
const IPV6_HDR: usize = 40;
/// IPv6 next-header values: the extension headers walked to find ICMPv6.
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DEST_OPTS: u8 = 60;
const NH_ICMPV6: u8 = 58;
/// Extension headers walked before giving up (a longer chain is dropped as malformed).
const MAX_EXT_HEADERS: usize = 8;
/// ICMPv6 types of neighbour discovery and MLD.
const ICMP6_MLD2_REPORT: u8 = 143;
const ICMP6_MLD1_REPORT: u8 = 131;
const ICMP6_MLD1_DONE: u8 = 132;
const ICMP6_ROUTER_SOLICIT: u8 = 133;
const ICMP6_ROUTER_ADVERT: u8 = 134;
const ICMP6_NEIGHBOUR_SOLICIT: u8 = 135;
const ICMP6_NEIGHBOUR_ADVERT: u8 = 136;
const ICMP6_REDIRECT: u8 = 137;
/// Neighbour discovery options: source and target link-layer address.
const ND_OPT_SLLA: u8 = 1;
const ND_OPT_TLLA: u8 = 2;

/// Log lines per reason per window before going quiet.
const LOG_BURST: u32 = 4;
/// The rate-limit window.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Why a transmitted frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The Ethernet source (or ARP sender) MAC is not the VM's.
    SourceMac,
    /// The IPv4 source (or ARP sender) address is not the VM's VIP.
    SourceIp,
    /// VLAN-tagged, or (in the boot phase) neither IPv4 nor ARP.
    EtherType,
    /// Too short for the headers it claims, or an ARP/IPv4/IPv6 header we cannot read.
    Malformed,
    /// IPv6 neighbour discovery that claims an address or MAC not the VM's, or a router
    /// advertisement or redirect (a VM is not the router).
    Ndp,
}

impl DropReason {
    /// A short stable name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::SourceMac => "spoofed-source-mac",
            DropReason::SourceIp => "spoofed-source-ip",
            DropReason::EtherType => "ethertype-not-allowed",
            DropReason::Malformed => "malformed-header",
            DropReason::Ndp => "spoofed-neighbour-discovery",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Frames dropped by the filter, per reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts {
    /// [`DropReason::SourceMac`].
    pub source_mac: u64,
    /// [`DropReason::SourceIp`].
    pub source_ip: u64,
    /// [`DropReason::EtherType`].
    pub ethertype: u64,
    /// [`DropReason::Malformed`].
    pub malformed: u64,
    /// [`DropReason::Ndp`].
    pub ndp: u64,
}

impl DropCounts {
    fn bump(&mut self, r: DropReason) -> u64 {
        let c = match r {
            DropReason::SourceMac => &mut self.source_mac,
            DropReason::SourceIp => &mut self.source_ip,
            DropReason::EtherType => &mut self.ethertype,
            DropReason::Malformed => &mut self.malformed,
            DropReason::Ndp => &mut self.ndp,
        };
        *c += 1;
        *c
    }

    /// All drops together.
    pub fn total(&self) -> u64 {
        self.source_mac + self.source_ip + self.ethertype + self.malformed + self.ndp
    }
}

/// One reason's log budget.
#[derive(Debug, Default, Clone, Copy)]
struct Budget {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Budget {
    /// Whether to log now; `Some(n)`: yes, and `n` lines were suppressed before.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= LOG_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < LOG_BURST {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The transmit filter of one VM's NIC.
#[derive(Debug, Clone)]
pub struct TxFilter {
    mac: [u8; 6],
    vip: [u8; 4],
    handed_over: bool,
    counts: DropCounts,
    budgets: [Budget; 5],
}

impl TxFilter {
    /// The filter for a VM with `mac` and `vip`, in the boot phase.
    pub fn new(mac: [u8; 6], vip: [u8; 4]) -> Self {
        TxFilter {
            mac,
            vip,
            handed_over: false,
            counts: DropCounts::default(),
            budgets: [Budget::default(); 5],
        }
    }

    /// The firmware handed over to the workload: the after-handover rules apply.
    pub fn handed_over(&mut self) {
        if !self.handed_over {
            self.handed_over = true;
            log::info!(mac = mac_str(&self.mac), vip = ip_str(&self.vip); "virtio-net: handover, transmit filter in workload mode");
        }
    }

    /// The drop counters.
    pub fn counts(&self) -> DropCounts {
        self.counts
    }

    /// Whether `frame` (an Ethernet frame, no virtio header) may leave; a refused frame
    /// is counted and (rate-limited) logged.
    pub fn allow(&mut self, frame: &[u8]) -> bool {
        match self.judge(frame) {
            Ok(()) => true,
            Err(r) => {
                self.refused(r, frame);
                false
            }
        }
    }

    /// The rules, without side effects.
    pub fn judge(&self, frame: &[u8]) -> Result<(), DropReason> {
        let (Some(src), Some(et)) = (frame.get(6..12), frame.get(12..14)) else {
            return Err(DropReason::Malformed);
        };
        if src != self.mac {
            return Err(DropReason::SourceMac);
        }
        let payload = frame.get(ETH_HDR..).unwrap_or_default();
        match u16::from_be_bytes([et[0], et[1]]) {
            ETHERTYPE_ARP => self.judge_arp(payload),
            ETHERTYPE_IPV4 => self.judge_ipv4(payload),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => Err(DropReason::EtherType),
            ETHERTYPE_IPV6 if self.handed_over => self.judge_ipv6(payload),
            _ if self.handed_over => Ok(()),
            _ => Err(DropReason::EtherType),
        }
    }

    fn source_ip_ok(&self, ip: &[u8]) -> bool {
        ip == self.vip || (self.handed_over && ip == [0u8; 4])
    }

    fn judge_arp(&self, arp: &[u8]) -> Result<(), DropReason> {
        let a = arp.get(..ARP_LEN).ok_or(DropReason::Malformed)?;
        // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses: nothing else.
        if a[0..6] != [0, 1, 8, 0, 6, 4] {
            return Err(DropReason::Malformed);
        }
        if a[8..14] != self.mac {
            return Err(DropReason::SourceMac);
        }
        if !self.source_ip_ok(&a[14..18]) {
            return Err(DropReason::SourceIp);
        }
        Ok(())
    }

    fn judge_ipv4(&self, ip: &[u8]) -> Result<(), DropReason> {
        let h = ip.get(..IPV4_MIN).ok_or(DropReason::Malformed)?;
        if h[0] >> 4 != 4 {
            return Err(DropReason::Malformed);
        }
        if !self.source_ip_ok(&h[12..16]) {
            return Err(DropReason::SourceIp);
        }
        Ok(())
    }

    /// The VM's own IPv6 addresses: the interface identifier (low 64 bits) is the MAC's
    /// modified EUI-64 (the universal/local bit flipped, `ff:fe` in the middle).
    fn own_ipv6(&self, a: &[u8]) -> bool {
        let m = self.mac;
        a.len() == 16 && a[8..16] == [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
    }

    fn judge_ipv6(&self, ip: &[u8]) -> Result<(), DropReason> {
        let h = ip.get(..IPV6_HDR).ok_or(DropReason::Malformed)?;
        if h[0] >> 4 != 6 {
            return Err(DropReason::Malformed);
        }
        let src = &h[8..24];
        let unspecified = src.iter().all(|b| *b == 0);
        if !unspecified && !self.own_ipv6(src) {
            return Err(DropReason::SourceIp);
        }
        // Walk the extension headers to the upper layer (bounded).
        let mut next = h[6];
        let mut off = IPV6_HDR;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    let e = ip.get(off..off + 2).ok_or(DropReason::Malformed)?;
                    next = e[0];
                    off += (usize::from(e[1]) + 1) * 8;
                }
                NH_FRAGMENT => {
                    let e = ip.get(off..off + 8).ok_or(DropReason::Malformed)?;
                    // Neighbour discovery is never fragmented (RFC 6980): an ICMPv6
                    // first fragment is dropped; later fragments carry no header.
                    let offset = u16::from_be_bytes([e[2], e[3]]) >> 3;
                    if offset == 0 && e[0] == NH_ICMPV6 {
                        return Err(DropReason::Ndp);
                    }
                    return if unspecified {
                        Err(DropReason::SourceIp)
                    } else {
                        Ok(())
                    };
                }
                NH_ICMPV6 => {
                    return self.judge_icmpv6(ip.get(off..).unwrap_or_default(), unspecified)
                }
                // Another upper layer: from `::` only ICMPv6 (DAD, MLD) makes sense.
                _ if unspecified => return Err(DropReason::SourceIp),
                _ => return Ok(()),
            }
        }
        Err(DropReason::Malformed)
    }

    fn judge_icmpv6(&self, m: &[u8], unspecified: bool) -> Result<(), DropReason> {
        let ty = *m.first().ok_or(DropReason::Malformed)?;
        match ty {
            ICMP6_ROUTER_ADVERT | ICMP6_REDIRECT => Err(DropReason::Ndp),
            ICMP6_NEIGHBOUR_SOLICIT | ICMP6_NEIGHBOUR_ADVERT => {
                // type, code, checksum, flags/reserved (4), target (16), options.
                let target = m.get(8..24).ok_or(DropReason::Malformed)?;
                // A solicitation asks about anyone; an advertisement answers for its
                // target, which must be the VM's own.
                if ty == ICMP6_NEIGHBOUR_ADVERT && !self.own_ipv6(target) {
                    return Err(DropReason::Ndp);
                }
                if ty == ICMP6_NEIGHBOUR_ADVERT && unspecified {
                    return Err(DropReason::SourceIp);
                }
                self.judge_nd_options(m.get(24..).unwrap_or_default())
            }
            ICMP6_ROUTER_SOLICIT => self.judge_nd_options(m.get(8..).unwrap_or_default()),
            ICMP6_MLD1_REPORT | ICMP6_MLD1_DONE | ICMP6_MLD2_REPORT => Ok(()),
            _ if unspecified => Err(DropReason::SourceIp),
            _ => Ok(()),
        }
    }

    /// Link-layer address options name only the VM's MAC; a zero-length option (which
    /// receivers reject) or a truncated one is malformed.
    fn judge_nd_options(&self, mut opts: &[u8]) -> Result<(), DropReason> {
        while !opts.is_empty() {
            let (ty, len) = match opts {
                [t, l, ..] => (*t, usize::from(*l) * 8),
                _ => return Err(DropReason::Malformed),
            };
            let opt = opts
                .get(..len)
                .filter(|o| !o.is_empty())
                .ok_or(DropReason::Malformed)?;
            if (ty == ND_OPT_SLLA || ty == ND_OPT_TLLA) && opt.get(2..8) != Some(&self.mac[..]) {
                return Err(DropReason::Ndp);
            }
            opts = &opts[len..];
        }
        Ok(())
    }

    fn refused(&mut self, r: DropReason, frame: &[u8]) {
        let count = self.counts.bump(r);
        let Some(suppressed) = self.budgets[r.index()].take(Instant::now()) else {
            return;
        };
        let src = frame
            .get(6..12)
            .map(|s| {
                s.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default();
        let ethertype = frame
            .get(12..14)
            .map(|e| format!("{:#06x}", u16::from_be_bytes([e[0], e[1]])))
            .unwrap_or_default();
        let phase = if self.handed_over { "workload" } else { "boot" };
        log::warn!(reason = r.name(), src_mac = src.as_str(), ethertype = ethertype.as_str(), bytes = frame.len(), phase = phase, count = count, suppressed = suppressed; "virtio-net: transmitted frame dropped");
    }

    /// Logs the counters (at the end of the VM).
    pub fn log_totals(&self) {
        let c = self.counts;
        log::info!(dropped_spoofed_source_mac = c.source_mac, dropped_spoofed_source_ip = c.source_ip, dropped_ethertype = c.ethertype, dropped_malformed_header = c.malformed, dropped_spoofed_ndp = c.ndp; "virtio-net transmit filter totals");
    }
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip_str(ip: &[u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const VIP: [u8; 4] = [10, 0, 0, 2];

    fn eth(src: [u8; 6], et: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&[10, 0, 0, 1]);
        eth(MAC, ETHERTYPE_ARP, &a)
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h.extend_from_slice(&[0; 8]);
        eth(MAC, ETHERTYPE_IPV4, &h)
    }

    #[test]
    fn boot_phase_rules() {
        let mut f = TxFilter::new(MAC, VIP);
        assert_eq!(f.judge(&arp(MAC, VIP)), Ok(()));
        assert_eq!(f.judge(&ipv4(VIP)), Ok(()));
        let mut spoofed = ipv4(VIP);
        spoofed[11] = 9;
        assert_eq!(f.judge(&spoofed), Err(DropReason::SourceMac));
        assert_eq!(
            f.judge(&arp([2, 0, 0, 0, 0, 9], VIP)),
            Err(DropReason::SourceMac)
        );
        assert_eq!(f.judge(&arp(MAC, [10, 0, 0, 1])), Err(DropReason::SourceIp));
        assert_eq!(f.judge(&ipv4([10, 0, 0, 1])), Err(DropReason::SourceIp));
        assert_eq!(f.judge(&ipv4([0; 4])), Err(DropReason::SourceIp));
        assert_eq!(
            f.judge(&eth(MAC, 0x86dd, &[0; 40])),
            Err(DropReason::EtherType)
        );
        assert_eq!(
            f.judge(&eth(MAC, ETHERTYPE_VLAN, &[0; 40])),
            Err(DropReason::EtherType)
        );
        assert_eq!(
            f.judge(&eth(MAC, ETHERTYPE_IPV4, &[0x45; 10])),
            Err(DropReason::Malformed)
        );
        assert_eq!(f.judge(&MAC), Err(DropReason::Malformed));
        assert!(!f.allow(&ipv4([10, 0, 0, 1])));
        assert!(!f.allow(&ipv4([10, 0, 0, 3])));
        assert_eq!(f.counts().source_ip, 2);
    }

    #[test]
    fn after_handover_mac_and_ip_still_hold() {
        let mut f = TxFilter::new(MAC, VIP);
        f.handed_over();
        assert_eq!(f.judge(&ipv4([0; 4])), Ok(()));
        assert_eq!(f.judge(&arp(MAC, [0; 4])), Ok(()));
        assert_eq!(f.judge(&eth(MAC, 0x88b5, &[0; 40])), Ok(()));
        assert_eq!(f.judge(&ipv4([10, 0, 0, 1])), Err(DropReason::SourceIp));
        assert_eq!(
            f.judge(&eth([2, 0, 0, 0, 0, 9], 0x86dd, &[0; 40])),
            Err(DropReason::SourceMac)
        );
        assert_eq!(
            f.judge(&eth(MAC, ETHERTYPE_QINQ, &[0; 40])),
            Err(DropReason::EtherType)
        );
    }

    /// fe80:: with the interface identifier of `mac` (modified EUI-64).
    fn link_local(mac: [u8; 6]) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0..2].copy_from_slice(&[0xfe, 0x80]);
        a[8..16].copy_from_slice(&[
            mac[0] ^ 2,
            mac[1],
            mac[2],
            0xff,
            0xfe,
            mac[3],
            mac[4],
            mac[5],
        ]);
        a
    }

    /// An IPv6 packet from `src` with next header `nh` and `payload`.
    fn ipv6(src: [u8; 16], nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[nh, 255]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(payload);
        eth(MAC, ETHERTYPE_IPV6, &h)
    }

    /// A neighbour solicitation (135) or advertisement (136) for `target`, with a
    /// link-layer address option (`opt` 1 or 2) naming `lla`.
    fn nd(ty: u8, target: [u8; 16], opt: u8, lla: [u8; 6]) -> Vec<u8> {
        let mut m = vec![ty, 0, 0, 0, 0x60, 0, 0, 0];
        m.extend_from_slice(&target);
        m.extend_from_slice(&[opt, 1]);
        m.extend_from_slice(&lla);
        m
    }

    #[test]
    fn after_handover_ipv6_is_held_to_the_vms_mac() {
        let mut f = TxFilter::new(MAC, VIP);
        f.handed_over();
        let own = link_local(MAC);
        let other = link_local([2, 0, 0, 0, 0, 3]);
        let gateway = {
            let mut a = [0u8; 16];
            a[0..2].copy_from_slice(&[0xfe, 0x80]);
            a[15] = 1;
            a
        };
        let mut slaac = own;
        slaac[0..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1]);
        // Its own link-local and SLAAC addresses: UDP passes; its neighbour answers too.
        assert_eq!(f.judge(&ipv6(own, 17, &[0; 8])), Ok(()));
        assert_eq!(f.judge(&ipv6(slaac, 6, &[0; 20])), Ok(()));
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(136, own, 2, MAC))),
            Ok(())
        );
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(135, gateway, 1, MAC))),
            Ok(())
        );
        // Duplicate address detection from `::` (no option) and an echo from its own.
        assert_eq!(
            f.judge(&ipv6([0; 16], NH_ICMPV6, &nd(135, own, 1, MAC)[..24])),
            Ok(())
        );
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1])),
            Ok(())
        );
        // Posing as another VM or the gateway: refused.
        assert_eq!(
            f.judge(&ipv6(other, 17, &[0; 8])),
            Err(DropReason::SourceIp)
        );
        assert_eq!(
            f.judge(&ipv6(gateway, 17, &[0; 8])),
            Err(DropReason::SourceIp)
        );
        assert_eq!(
            f.judge(&ipv6([0; 16], 17, &[0; 8])),
            Err(DropReason::SourceIp)
        );
        // The attack: advertise the gateway's address (or another VM's) from its own.
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(136, gateway, 2, MAC))),
            Err(DropReason::Ndp)
        );
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(136, other, 2, MAC))),
            Err(DropReason::Ndp)
        );
        // Its own address with another MAC in the option, in an answer or a question.
        let m9 = [2, 0, 0, 0, 0, 9];
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(136, own, 2, m9))),
            Err(DropReason::Ndp)
        );
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &nd(135, gateway, 1, m9))),
            Err(DropReason::Ndp)
        );
        // Router advertisements and redirects: never from a VM.
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &[134, 0, 0, 0, 64, 0, 0, 0])),
            Err(DropReason::Ndp)
        );
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &[137; 40])),
            Err(DropReason::Ndp)
        );
        // Hidden behind a destination-options header: still found.
        let mut hidden = vec![NH_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        hidden.extend_from_slice(&nd(136, gateway, 2, MAC));
        assert_eq!(
            f.judge(&ipv6(own, NH_DEST_OPTS, &hidden)),
            Err(DropReason::Ndp)
        );
        // A fragmented ICMPv6 first fragment (where an NA could hide): dropped.
        let mut frag = vec![NH_ICMPV6, 0, 0, 1, 0, 0, 0, 7];
        frag.extend_from_slice(&nd(136, gateway, 2, MAC));
        assert_eq!(
            f.judge(&ipv6(own, NH_FRAGMENT, &frag)),
            Err(DropReason::Ndp)
        );
        // Truncated headers, a zero-length option, an endless extension chain.
        assert_eq!(
            f.judge(&eth(MAC, ETHERTYPE_IPV6, &[0x60; 20])),
            Err(DropReason::Malformed)
        );
        let mut zero_opt = nd(136, own, 2, MAC);
        zero_opt[25] = 0;
        assert_eq!(
            f.judge(&ipv6(own, NH_ICMPV6, &zero_opt)),
            Err(DropReason::Malformed)
        );
        let chain: Vec<u8> = (0..MAX_EXT_HEADERS + 1)
            .flat_map(|_| [NH_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0])
            .collect();
        assert_eq!(
            f.judge(&ipv6(own, NH_DEST_OPTS, &chain)),
            Err(DropReason::Malformed)
        );
        assert!(!f.allow(&ipv6(own, NH_ICMPV6, &nd(136, gateway, 2, MAC))));
        assert_eq!(f.counts().ndp, 1);
    }

    #[test]
    fn logging_is_rate_limited_counting_is_not() {
        let mut b = Budget::default();
        let t = Instant::now();
        for _ in 0..LOG_BURST {
            assert_eq!(b.take(t), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(b.take(t), None);
        }
        assert_eq!(b.take(t + LOG_WINDOW), Some(100));
        let mut f = TxFilter::new(MAC, VIP);
        for _ in 0..1000 {
            f.allow(&ipv4([10, 0, 0, 1]));
        }
        assert_eq!(f.counts().source_ip, 1000);
        assert_eq!(f.counts().total(), 1000);
    }
}
