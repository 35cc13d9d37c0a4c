//! The ring-0 stub: the only code of the firmware that runs at CPL 0.
//!
//! Hand-written assembly without any SIMD instruction (on our development machines'
//! nested KVM, guest CPL-0 code is emulated and cannot execute SSE; see
//! `docs/firmware.md`). It runs once at entry and then only for exceptions and the
//! final handover:
//!
//! 1. writes boot-timer milestone 0, checks the boot-info page (`RSI`) and reads the
//!    memory size;
//! 2. loads its own GDT (kernel and user segments, a TSS whose I/O bitmap opens only
//!    the serial, boot-timer, doorbell, power-off and i8042 ports to CPL 3), and an IDT
//!    whose exception handlers print the fault on the serial port, report
//!    `BOOT_FAILED` through the mailbox and power off;
//! 3. builds page tables (layout in `link.ld`): the stub's pages and the tables
//!    supervisor-only, the Rust text user read-only executable, everything else
//!    no-execute; the boot region and page 0 not present, the configuration page user
//!    read-only, the mailbox and the TPM event log area user read-write, a guard page
//!    below the user stack, the virtio-net register window and the TPM's CRB window
//!    user read-write uncached;
//! 4. enables SSE for CPL 3 (CR4.OSFXSR | OSXMMEXCPT, CR0.MP, !CR0.EM), write
//!    protection (CR0.WP) and no-execute (EFER.NXE), and `iretq`s into
//!    [`crate::firmware_main`] at CPL 3 with IOPL 0 and interrupts off.
//!
//! The way back into the stub is the single `ud2` at `tvp_service_call` (user text):
//! the stub's #UD handler treats a #UD at exactly that address as a service call and
//! every other #UD as a fault. (A DPL-3 `int 0x80` gate and `syscall` were tried
//! first: on our development machines' nested KVM, `int n` from CPL 3 arrives as #UD
//! and `syscall` jumps without leaving CPL 3. Exceptions are delivered faithfully.)
//! The only service is [`SERVICE_HANDOVER`]: switch back to the VMM's identity page
//! tables (the measured boot region, untouched since entry) and jump to the workload
//! at CPL 0.

use core::arch::global_asm;
use tvp_abi::{layout, mailbox, ports};

/// Service: hand over to the workload; `RDI` = entry point, `RSI` = its argument.
pub const SERVICE_HANDOVER: u64 = 1;
/// Base of the boot-failure reason codes for CPU exceptions: `STUB_FAULT_BASE | vector`.
pub const STUB_FAULT_BASE: u32 = 0x100;
/// Reason code: the boot-info page is invalid or RAM too small for the image.
pub const STUB_BAD_BOOT_INFO: u32 = 0x1f0;
/// Reason code: an unknown stub service was requested.
pub const STUB_BAD_SERVICE: u32 = 0x1f1;
/// The image must end below this address (the stub maps it with 4 KiB pages; eight
/// page tables).
pub const IMAGE_LIMIT: u64 = 16 << 20;
/// Bytes of the TSS I/O permission bitmap (ports `0..0x800`; all higher ports denied).
const IOMAP_BYTES: usize = 0x100;

global_asm!(
    r#"
    .set PTE_P, 1
    .set PTE_RW, 2
    .set PTE_US, 4
    .set PTE_PCD, 0x10
    .set PTE_PS, 0x80

    /* ---------------------------------------------------------------- text */
    .section .stub.text, "ax"
    .code64
    .global _start
_start:
    cli
    cld
    mov ${timer}, %dx
    xor %eax, %eax                /* milestone 0: first instruction */
    out %al, %dx
    lea stub_stack_top(%rip), %rsp

    /* Boot info: magic and memory size (RAM must hold the image, below 4 GiB). */
    mov ${boot_info}, %rbx
    cmpl $0x42505654, (%rbx)      /* "TVPB" */
    jne bad_boot_info
    mov 0x20(%rbx), %r15
    lea __image_end(%rip), %rax
    cmp %rax, %r15
    jb bad_boot_info
    mov ${image_limit}, %rcx
    cmp %rcx, %rax
    ja bad_boot_info
    movabs $0x100000000, %rax
    cmp %rax, %r15
    ja bad_boot_info

    /* TSS descriptor (base split across the descriptor). */
    lea tss(%rip), %rax
    mov $(tss_end - tss - 1), %edx
    mov %rax, %rcx
    and $0xffffff, %ecx
    shl $16, %rcx
    or %rcx, %rdx
    mov $0x89, %ecx               /* present, DPL 0, available 64-bit TSS */
    shl $40, %rcx
    or %rcx, %rdx
    mov %rax, %rcx
    shr $24, %rcx
    and $0xff, %ecx
    shl $56, %rcx
    or %rcx, %rdx
    mov %rdx, gdt_tss(%rip)
    shr $32, %rax
    mov %rax, gdt_tss+8(%rip)

    /* I/O permission bitmap: open exactly the ports CPL 3 needs. */
    .macro allow_port p
    andb $((~(1 << ((\p) & 7))) & 0xff), tss_iomap + ((\p) >> 3)(%rip)
    .endm
    allow_port {serial}
    allow_port {serial}+1
    allow_port {serial}+2
    allow_port {serial}+3
    allow_port {serial}+4
    allow_port {serial}+5
    allow_port {serial}+6
    allow_port {serial}+7
    allow_port {timer}
    allow_port {doorbell}
    allow_port {power}
    allow_port {power}+1
    allow_port {i8042}

    lgdt gdtr(%rip)
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    lea 1f(%rip), %rax
    push $0x08
    push %rax
    lretq
1:
    mov $0x28, %ax
    ltr %ax

    /* IDT: 32 exception gates (DPL 0; #NMI, #DF, #MC on IST 1) and the service gate. */
    lea idt(%rip), %rdi
    xor %ecx, %ecx
2:
    lea isr_table(%rip), %rsi
    mov (%rsi,%rcx,8), %rax
    mov $0x8e, %edx
    xor %r8d, %r8d
    cmp $2, %ecx
    je 3f
    cmp $8, %ecx
    je 3f
    cmp $18, %ecx
    jne 4f
3:
    mov $1, %r8d
4:
    call set_gate
    inc %ecx
    cmp $32, %ecx
    jb 2b
    lidt idtr(%rip)

    call build_page_tables

    /* CR4: PAE | OSFXSR | OSXMMEXCPT. CR0: PE|MP|ET|NE|WP|PG, EM and TS clear. */
    mov $0x620, %eax
    mov %rax, %cr4
    mov %cr0, %rax
    and $~0xc, %rax               /* EM, TS */
    or $0x10022, %rax             /* MP, NE, WP */
    mov %rax, %cr0
    mov $0xc0000080, %ecx         /* EFER.NXE */
    rdmsr
    or $0x800, %eax
    wrmsr
    lea pml4(%rip), %rax
    mov %rax, %cr3

    /* Enter the Rust firmware at CPL 3: firmware_main(mem_size). */
    mov $0x1b, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    push $0x1b                    /* SS */
    lea __user_stack_top(%rip), %rax
    sub $8, %rax                  /* as if called: RSP+8 is 16-byte aligned */
    push %rax
    push $0x2                     /* RFLAGS: IOPL 0, interrupts off */
    push $0x23                    /* CS */
    lea {main}(%rip), %rax
    push %rax
    mov %r15, %rdi
    xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    iretq

/* set_gate: rdi = IDT, ecx = vector, rax = handler, dl = type/attributes, r8b = IST.
   Clobbers rax, r9, r10. */
set_gate:
    mov %rcx, %r9
    shl $4, %r9
    add %rdi, %r9
    mov %ax, (%r9)
    movw $0x08, 2(%r9)
    mov %r8b, 4(%r9)
    mov %dl, 5(%r9)
    mov %rax, %r10
    shr $16, %r10
    mov %r10w, 6(%r9)
    shr $32, %rax
    mov %eax, 8(%r9)
    movl $0, 12(%r9)
    ret

/* build_page_tables: r15 = memory size. Identity map; 4 KiB pages below the image's
   end rounded up to 2 MiB, 2 MiB pages above, nothing at or above the memory size. */
build_page_tables:
    movabs $0x8000000000000000, %r14   /* NX */
    lea pdpt(%rip), %rax
    or $(PTE_P|PTE_RW|PTE_US), %rax
    mov %rax, pml4(%rip)
    lea pd(%rip), %rax
    or $(PTE_P|PTE_RW|PTE_US), %rax
    lea pdpt(%rip), %rdi
    xor %ecx, %ecx
1:
    mov %rax, (%rdi,%rcx,8)
    add $0x1000, %rax
    inc %ecx
    cmp $4, %ecx
    jb 1b

    /* r13 = end of the 4 KiB-mapped range = image end rounded up to 2 MiB. */
    lea __image_end(%rip), %r13
    add $0x1fffff, %r13
    and $~0x1fffff, %r13
    /* PD entries of the 4 KiB range point to the page tables. */
    lea pd(%rip), %rdi
    lea pt(%rip), %rax
    or $(PTE_P|PTE_RW|PTE_US), %rax
    xor %ecx, %ecx
    mov %r13, %rdx
    shr $21, %rdx
2:
    mov %rax, (%rdi,%rcx,8)
    add $0x1000, %rax
    inc %ecx
    cmp %edx, %ecx
    jb 2b

    /* 4 KiB page table entries. rbx = address. */
    lea pt(%rip), %rdi
    xor %ebx, %ebx
3:
    xor %eax, %eax                /* not present unless a rule below matches */
    cmp $0x10000, %rbx
    jb 9f                         /* page 0 and the boot region */
    cmp ${config_page}, %rbx
    jne 4f
    mov $(PTE_P|PTE_US), %eax     /* configuration page: user, read-only */
    jmp 8f
4:
    cmp ${mailbox}, %rbx
    jb 5f
    cmp ${mailbox_end}, %rbx
    jae 5f
    mov $(PTE_P|PTE_RW|PTE_US), %eax  /* mailbox */
    jmp 8f
5:
    cmp ${tpm_log}, %rbx
    jb 16f
    cmp ${tpm_log_end}, %rbx
    jae 16f
    mov $(PTE_P|PTE_RW|PTE_US), %eax  /* the TPM event log area */
    jmp 8f
16:
    cmp ${firmware_base}, %rbx
    jb 9f
    cmp %r15, %rbx
    jae 9f                        /* beyond RAM */
    lea __stub_text_end(%rip), %rdx
    cmp %rdx, %rbx
    jae 6f
    mov $PTE_P, %eax              /* stub text: supervisor, read-only, executable */
    jmp 10f
6:
    lea __stub_end(%rip), %rdx
    cmp %rdx, %rbx
    jae 7f
    mov $(PTE_P|PTE_RW), %eax     /* stub data and tables: supervisor */
    jmp 8f
7:
    lea __user_text_end(%rip), %rdx
    cmp %rdx, %rbx
    jae 11f
    mov $(PTE_P|PTE_US), %eax     /* Rust text: user, read-only, executable */
    jmp 10f
11:
    lea __user_rodata_end(%rip), %rdx
    cmp %rdx, %rbx
    jae 12f
    mov $(PTE_P|PTE_US), %eax     /* Rust rodata */
    jmp 8f
12:
    lea __guard_start(%rip), %rdx
    cmp %rdx, %rbx
    jb 13f
    lea __guard_end(%rip), %rdx
    cmp %rdx, %rbx
    jb 9f                         /* user stack guard page */
13:
    mov $(PTE_P|PTE_RW|PTE_US), %eax
8:
    or %r14, %rax                 /* no-execute */
10:
    or %rbx, %rax
9:
    mov %rax, (%rdi)
    add $8, %rdi
    add $0x1000, %rbx
    cmp %r13, %rbx
    jb 3b

    /* 2 MiB pages from r13 to the memory size (rounded up). */
    lea pd(%rip), %rdi
    mov %r13, %rbx
14:
    cmp %r15, %rbx
    jae 15f
    mov %rbx, %rax
    or $(PTE_P|PTE_RW|PTE_US|PTE_PS), %rax
    or %r14, %rax
    mov %rbx, %rcx
    shr $21, %rcx
    mov %rax, (%rdi,%rcx,8)
    add $0x200000, %rbx
    jmp 14b
15:
    /* The virtio-net register window: one 2 MiB page, user, uncached, no-execute. */
    mov ${virtio_mmio}, %rbx
    mov %rbx, %rax
    or $(PTE_P|PTE_RW|PTE_US|PTE_PS|PTE_PCD), %rax
    or %r14, %rax
    shr $21, %rbx
    mov %rax, (%rdi,%rbx,8)
    /* The TPM's CRB window: one 4 KiB page, user, uncached, no-execute, in its own
       page table (the rest of that 2 MiB, the IOAPIC included, stays unmapped). */
    lea pt_tpm(%rip), %rax
    or $(PTE_P|PTE_RW|PTE_US), %rax
    mov ${tpm_crb}, %rbx
    shr $21, %rbx
    mov %rax, (%rdi,%rbx,8)
    mov ${tpm_crb}, %rax
    or $(PTE_P|PTE_RW|PTE_US|PTE_PCD), %rax
    or %r14, %rax
    lea pt_tpm(%rip), %rdi
    mov ${tpm_crb}, %rbx
    and $0x1fffff, %rbx
    shr $12, %rbx
    mov %rax, (%rdi,%rbx,8)
    ret

/* ------------------------------------------------------------ exceptions */
    .macro isr_noerr n
isr\n:
    push $0
    push $\n
    jmp fault_common
    .endm
    .macro isr_err n
isr\n:
    push $\n
    jmp fault_common
    .endm
    .irp n, 0,1,2,3,4,5,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    isr_noerr \n
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    isr_err \n
    .endr

/* Stack: vector, error code, rip, cs, rflags, rsp, ss. */
fault_common:
    lea msg_fault(%rip), %rsi
    call puts
    mov 0(%rsp), %rax
    call puthex
    lea msg_err(%rip), %rsi
    call puts
    mov 8(%rsp), %rax
    call puthex
    lea msg_rip(%rip), %rsi
    call puts
    mov 16(%rsp), %rax
    call puthex
    lea msg_cs(%rip), %rsi
    call puts
    mov 24(%rsp), %rax
    call puthex
    lea msg_rsp(%rip), %rsi
    call puts
    mov 40(%rsp), %rax
    call puthex
    lea msg_cr2(%rip), %rsi
    call puts
    mov %cr2, %rax
    call puthex
    lea msg_nl(%rip), %rsi
    call puts
    mov 0(%rsp), %eax
    or ${fault_base}, %eax
    jmp fail

bad_boot_info:
    lea msg_boot_info(%rip), %rsi
    call puts
    mov ${bad_boot_info_code}, %eax
    jmp fail

/* #UD: the service call if it is the `ud2` at tvp_service_call, else a fault. */
isr6:
    push %rax
    lea tvp_service_call(%rip), %rax
    cmp %rax, 8(%rsp)             /* the saved RIP */
    pop %rax
    je service_entry
    push $0
    push $6
    jmp fault_common

/* Service call from CPL 3: rax = service. */
service_entry:
    cmp ${service_handover}, %rax
    jne bad_service
    /* Back to the VMM's identity map (2 MiB pages, 4 GiB, supervisor RWX). */
    mov ${vmm_pml4}, %rax
    mov %rax, %cr3
    lea stub_stack_top(%rip), %rsp
    xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %ebp, %ebp
    jmp *%rdi

bad_service:
    lea msg_service(%rip), %rsi
    call puts
    mov ${bad_service_code}, %eax
    jmp fail

/* fail: eax = reason. BOOT_FAILED through the mailbox, then power off. */
fail:
    mov ${mbox_req}, %rdi
    movl ${req_magic}, (%rdi)
    movw ${mbox_version}, 4(%rdi)
    movw ${cmd_boot_failed}, 6(%rdi)
    movl $4, 8(%rdi)
    movl $0, 12(%rdi)
    mov %eax, 16(%rdi)
    mov ${doorbell}, %dx
    out %al, %dx
power_off:
    mov ${power}, %dx
    mov ${power_value}, %ax
    out %ax, %dx
16:
    cli
    hlt
    jmp 16b

/* puts: rsi = NUL-terminated string. Clobbers rax, rdx, rsi. */
puts:
    mov ${serial}, %dx
17:
    movb (%rsi), %al
    test %al, %al
    jz 18f
    out %al, %dx
    inc %rsi
    jmp 17b
18:
    ret

/* puthex: rax as 16 hex digits. Clobbers rax, rbx, rcx, rdx. */
puthex:
    mov %rax, %rbx
    mov $16, %ecx
    mov ${serial}, %dx
19:
    rol $4, %rbx
    mov %ebx, %eax
    and $0xf, %eax
    cmp $10, %eax
    jb 20f
    add $0x27, %eax
20:
    add $0x30, %eax
    out %al, %dx
    dec %ecx
    jnz 19b
    ret

msg_fault:      .asciz "\r\ntvp-firmware: CPU exception vector="
msg_err:        .asciz " error="
msg_rip:        .asciz " rip="
msg_cs:         .asciz " cs="
msg_rsp:        .asciz " rsp="
msg_cr2:        .asciz " cr2="
msg_nl:         .asciz "\r\n"
msg_boot_info:  .asciz "tvp-firmware: invalid boot-info page or RAM too small\r\n"
msg_service:    .asciz "\r\ntvp-firmware: unknown stub service\r\n"

/* ---------------------------------------------------------------- data */
    .section .stub.data, "aw"
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9b000000ffff      /* 0x08 kernel code, 64-bit */
    .quad 0x00cf93000000ffff      /* 0x10 kernel data */
    .quad 0x00cff3000000ffff      /* 0x18 user data (DPL 3) */
    .quad 0x00affb000000ffff      /* 0x20 user code, 64-bit (DPL 3) */
gdt_tss:
    .quad 0, 0                    /* 0x28 TSS, filled at entry */
gdt_end:
    .balign 8
gdtr:
    .word gdt_end - gdt - 1
    .quad gdt
    .balign 8
idtr:
    .word 256 * 16 - 1
    .quad idt
    .balign 8
isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr\n
    .endr
    .balign 16
tss:
    .long 0
    .quad stub_stack_top          /* RSP0 */
    .quad 0, 0                    /* RSP1, RSP2 */
    .quad 0
    .quad ist1_stack_top          /* IST1 */
    .quad 0, 0, 0, 0, 0, 0        /* IST2..7 */
    .quad 0
    .word 0
    .word tss_iomap - tss         /* I/O permission bitmap offset */
tss_iomap:
    .fill {iomap_bytes}, 1, 0xff
    .byte 0xff                    /* terminator */
tss_end:

    .section .stub.bss, "aw", @nobits
    .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4 * 4096            /* 4 GiB, as one array of 2048 entries */
pt:     .skip ({image_limit} >> 21) * 4096
pt_tpm: .skip 4096                /* the 2 MiB around the TPM's CRB window */
idt:    .skip 4096
ist1_stack:
        .skip 4096
ist1_stack_top:
stub_stack:
        .skip 16384
stub_stack_top:

    /* The service call instruction, in user text (see the module docs). */
    .text
    .global tvp_service_call
tvp_service_call:
    ud2
"#,
    timer = const ports::BOOT_TIMER_PORT,
    serial = const ports::SERIAL_COM1_BASE,
    doorbell = const ports::MAILBOX_DOORBELL_PORT,
    power = const ports::POWER_PORT,
    power_value = const ports::POWER_OFF_VALUE,
    i8042 = const ports::I8042_COMMAND_PORT,
    boot_info = const layout::BOOT_INFO_GPA,
    config_page = const layout::CONFIG_PAGE_GPA,
    mailbox = const layout::MAILBOX_GPA,
    mailbox_end = const layout::MAILBOX_GPA + layout::MAILBOX_SIZE as u64,
    firmware_base = const layout::FIRMWARE_MIN_GPA,
    vmm_pml4 = const layout::PML4_GPA,
    virtio_mmio = const layout::VIRTIO_NET_MMIO_GPA,
    tpm_crb = const layout::TPM_CRB_GPA,
    tpm_log = const layout::TPM_EVENT_LOG_GPA,
    tpm_log_end = const layout::TPM_EVENT_LOG_GPA + layout::TPM_EVENT_LOG_SIZE,
    mbox_req = const layout::MAILBOX_GPA + mailbox::REQUEST_OFFSET as u64,
    req_magic = const u32::from_le_bytes(mailbox::REQUEST_MAGIC),
    mbox_version = const mailbox::MAILBOX_ABI_VERSION,
    cmd_boot_failed = const mailbox::Command::BootFailed as u16,
    image_limit = const IMAGE_LIMIT,
    iomap_bytes = const IOMAP_BYTES,
    service_handover = const SERVICE_HANDOVER,
    fault_base = const STUB_FAULT_BASE,
    bad_boot_info_code = const STUB_BAD_BOOT_INFO,
    bad_service_code = const STUB_BAD_SERVICE,
    main = sym crate::firmware_main,
    options(att_syntax)
);

/// Asks the stub to hand over to the workload at `entry` (CPL 0, the VMM's identity
/// map, interrupts off, `RSI` = `arg`). Does not return.
pub fn handover(entry: u64, arg: u64) -> ! {
    // SAFETY: the service call never returns to CPL 3: the stub switches page tables
    // and jumps to `entry`. Nothing of this program's state is used afterwards.
    unsafe {
        core::arch::asm!(
            "jmp tvp_service_call",
            in("rax") SERVICE_HANDOVER,
            in("rdi") entry,
            in("rsi") arg,
            options(noreturn)
        )
    }
}
