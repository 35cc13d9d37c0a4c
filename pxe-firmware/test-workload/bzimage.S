/* A stand-in Linux kernel for the network-boot tests: a file in the bzImage format
 * (boot sector, setup header of boot protocol 2.15: relocatable, 64-bit entry) whose
 * protected-mode part, entered at +0x200 with RSI = the zero page, prints what the
 * firmware's Linux loader gave it and powers the VM off:
 *   tvp-bzimage: loader=0xff cmdline=<command line> e820=<n> initrd=<first 16 bytes>
 * A real kernel cannot run at CPL 0 on the development machines' KVM (ENVIRONMENT.md);
 * this checks the loader's side of the boot protocol. Build: scripts/build-test-workload.sh */
    .code64
    .text
    .org 0x1f1
    .byte 1                             /* setup_sects: the pm part starts at 0x400 */
    .word 0                             /* root_flags */
    .long (pm_end - pm_start) / 16      /* syssize */
    .org 0x1fe
    .word 0xaa55                        /* boot_flag */
    .byte 0xeb, 0x66                    /* jump: the setup header ends at 0x268 */
    .ascii "HdrS"
    .word 0x020f                        /* protocol 2.15 */
    .org 0x211
    .byte 0x01                          /* loadflags: LOADED_HIGH */
    .org 0x22c
    .long 0x7fffffff                    /* initrd_addr_max */
    .long 0x200000                      /* kernel_alignment */
    .byte 1                             /* relocatable_kernel */
    .byte 21                            /* min_alignment */
    .word 0x0001                        /* xloadflags: XLF_KERNEL_64 */
    .long 2047                          /* cmdline_size */
    .org 0x258
    .quad 0x1000000                     /* pref_address */
    .long 0x100000                      /* init_size */
    .org 0x400
pm_start:                               /* startup_32: not used by a 64-bit loader */
    cli
1:  hlt
    jmp 1b
    .org pm_start + 0x200
startup_64:
    mov %rsi, %rbx                      /* the zero page */
    lea banner(%rip), %rdi
    call puts
    movzbl 0x210(%rbx), %eax            /* type_of_loader */
    call puthex8
    lea s_cmd(%rip), %rdi
    call puts
    mov 0x228(%rbx), %edi               /* cmd_line_ptr | ext_cmd_line_ptr << 32 */
    mov 0xc8(%rbx), %eax
    shl $32, %rax
    or %rax, %rdi
    call puts
    lea s_e820(%rip), %rdi
    call puts
    movzbl 0x1e8(%rbx), %eax            /* e820_entries */
    call puthex8
    lea s_initrd(%rip), %rdi
    call puts
    mov 0x218(%rbx), %esi               /* ramdisk_image | ext_ramdisk_image << 32 */
    mov 0xc0(%rbx), %eax
    shl $32, %rax
    or %rax, %rsi
    mov 0x21c(%rbx), %ecx               /* ramdisk_size, at most 16 bytes shown */
    cmp $16, %ecx
    jbe 2f
    mov $16, %ecx
2:  mov $0x3f8, %dx
    test %ecx, %ecx
    jz 4f
3:  lodsb
    out %al, %dx
    loop 3b
4:  lea s_nl(%rip), %rdi
    call puts
    mov $0x604, %dx                     /* power off */
    mov $0x2000, %ax
    out %ax, %dx
5:  cli
    hlt
    jmp 5b

puts:                                   /* rdi: NUL-terminated string */
    mov $0x3f8, %dx
6:  movb (%rdi), %al
    test %al, %al
    jz 7f
    out %al, %dx
    inc %rdi
    jmp 6b
7:  ret

puthex8:                                /* al: two hex digits */
    mov %eax, %ecx
    shr $4, %eax
    call nibble
    mov %ecx, %eax
nibble:
    and $0xf, %eax
    cmp $10, %eax
    jb 8f
    add $('a' - '0' - 10), %eax
8:  add $'0', %eax
    mov $0x3f8, %dx
    out %al, %dx
    ret

banner: .asciz "tvp-bzimage: loader=0x"
s_cmd:  .asciz " cmdline="
s_e820: .asciz " e820="
s_initrd: .asciz " initrd="
s_nl:   .asciz "\n"
    .balign 16
pm_end:
