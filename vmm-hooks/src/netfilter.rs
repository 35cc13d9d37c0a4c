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
//! ARP probes: they claim no one's address) and other EtherTypes (IPv6, for one),
//! which are filtered by MAC only; `docs/vmm-boot.md` states what remains.
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
const ARP_LEN: usize = 28;
const IPV4_MIN: usize = 20;

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
    /// Too short for the headers it claims, or an ARP/IPv4 header we cannot read.
    Malformed,
}

impl DropReason {
    /// A short stable name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::SourceMac => "spoofed-source-mac",
            DropReason::SourceIp => "spoofed-source-ip",
            DropReason::EtherType => "ethertype-not-allowed",
            DropReason::Malformed => "malformed-header",
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
}

impl DropCounts {
    fn bump(&mut self, r: DropReason) -> u64 {
        let c = match r {
            DropReason::SourceMac => &mut self.source_mac,
            DropReason::SourceIp => &mut self.source_ip,
            DropReason::EtherType => &mut self.ethertype,
            DropReason::Malformed => &mut self.malformed,
        };
        *c += 1;
        *c
    }

    /// All drops together.
    pub fn total(&self) -> u64 {
        self.source_mac + self.source_ip + self.ethertype + self.malformed
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
    budgets: [Budget; 4],
}

impl TxFilter {
    /// The filter for a VM with `mac` and `vip`, in the boot phase.
    pub fn new(mac: [u8; 6], vip: [u8; 4]) -> Self {
        TxFilter {
            mac,
            vip,
            handed_over: false,
            counts: DropCounts::default(),
            budgets: [Budget::default(); 4],
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
        log::info!(dropped_spoofed_source_mac = c.source_mac, dropped_spoofed_source_ip = c.source_ip, dropped_ethertype = c.ethertype, dropped_malformed_header = c.malformed; "virtio-net transmit filter totals");
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
        assert_eq!(f.judge(&eth(MAC, 0x86dd, &[0; 40])), Ok(()));
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
