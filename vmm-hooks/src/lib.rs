//! `tvp-vmm`: the per-VM VMM process of tvp.
//!
//! It builds one KVM VM (guest memory, firmware ELF, configuration page, boot tables),
//! measures every byte it places before the first vCPU runs, reports the measurements
//! to `tvpd` over a private channel ([`tvp_vmm_channel`]), serves the attestation
//! mailbox, and ends the VM cleanly. It has no TPM access.
//!
//! Modules: [`memory`], [`loader`], [`measure`], [`devices`], [`virtio_mmio`] (the
//! transport) with [`virtio_net`] ([`tap`], [`netfilter`]: what it may send, [`net_rx`]:
//! its receive thread, [`offload`]: the TAP device's TSO segments and partial
//! checksums made into what the guest takes) and
//! [`virtio_blk`] (the tenant's encrypted image as a read-only disk), [`dma`]: what a device may write, [`mailbox`],
//! [`channel`] (with [`adopt`]: surviving a tvpd restart),
//! [`arch`] (in-kernel irqchip, PIT, per-vCPU MSRs and LAPIC) with [`cpuid`], [`vcpu`]
//! (one vCPU's loop) and [`vcpus`] (the set of vCPU threads), [`lockdown`], [`vm`] (the lifecycle), [`shutdown`], [`error`]. `unsafe`
//! appears only in `memory` (KVM memory slots), `channel` (adopting the inherited fd),
//! `vcpu` (the exit union, the kick signal), `tap` (TUNSETIFF), `net_rx` (ppoll) and `lockdown` (prctl,
//! madvise).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod adopt;
pub mod arch;
pub mod channel;
pub mod cpuid;
pub mod devices;
pub mod disk;
pub mod dma;
pub mod error;
pub mod image;
pub mod loader;
pub mod lockdown;
pub mod mailbox;
pub mod measure;
pub mod memory;
pub mod net_rx;
pub mod netfilter;
pub mod offload;
pub mod shutdown;
pub mod tap;
pub mod tpm_crb;
pub mod vcpu;
pub mod vcpus;
pub mod virtio_blk;
pub mod virtio_mmio;
pub mod virtio_net;
pub mod vm;
