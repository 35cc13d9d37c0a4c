/* Transmits frames that pose as another VM, the gateway or the boot server, and two
 * legitimate ones (the VM's MAC 02:00:00:00:00:01 and VIP 10.0.0.2 from
 * tests/common's configuration page). Each frame carries a marker the test looks for
 * on the TAP side. With HANDOVER defined, it hands over first (workload phase). */
#include "lib.S"
#include "vnet.S"
main:
#ifdef HANDOVER
    call attest
#endif
    call vnet_init
    call vnet_tx_queue
    call vnet_go
    mov $'\n', %al
    call putc
#define SEND(f) mov $f, %rdi; mov $(f##_end - f), %esi; call vnet_send
    SEND(legit_arp)
    SEND(spoof_mac)
    SEND(spoof_arp_sha)
    SEND(spoof_arp_ip)
    SEND(spoof_ip_server)
    SEND(spoof_ip_vm)
    SEND(legit_ip)
    SEND(ipv6)
    SEND(spoof_na)
    SEND(spoof_ra)
    SEND(legit_ip_zero)
    mov $'T', %al
    movzwl TX_USED + 2, %ebx
    call print_field
    mov $'\n', %al
    call putc
    call puts_done
    jmp power_off

    .data
/* An ARP request: Ethernet source ..:ethsrc, sender MAC ..:sha, sender IP 10.0.0.spa */
.macro ARPF name, ethsrc, sha, spa, tag
\name:
    .fill 12, 1, 0
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, \ethsrc, 0x08, 0x06
    .byte 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, \sha, 10, 0, 0, \spa
    .byte 0, 0, 0, 0, 0, 0, 10, 0, 0, 1
    .ascii "\tag"
\name\()_end:
.endm
/* A UDP datagram from 10.0.0.src (or 0.0.0.0 with src = 0 and zero = 1) */
.macro IPF name, a, b, c, src, tag
\name:
    .fill 12, 1, 0
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00
    .byte 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, \a, \b, \c, \src, 10, 0, 0, 1
    .byte 0x30, 0x39, 0, 9, 0, 26, 0, 0
    .ascii "\tag"
\name\()_end:
.endm
    ARPF legit_arp, 1, 1, 2, "TVP-LEGIT-ARP-----"
    ARPF spoof_mac, 0x99, 0x99, 2, "TVP-SPOOF-MAC-----"
    ARPF spoof_arp_sha, 1, 0x99, 2, "TVP-SPOOF-ARP-SHA-"
    ARPF spoof_arp_ip, 1, 1, 1, "TVP-SPOOF-ARP-IP--"
    IPF spoof_ip_server, 10, 0, 0, 1, "TVP-SPOOF-IP-SRV--"
    IPF spoof_ip_vm, 10, 0, 0, 3, "TVP-SPOOF-IP-VM---"
    IPF legit_ip, 10, 0, 0, 2, "TVP-LEGIT-IP------"
    IPF legit_ip_zero, 0, 0, 0, 0, "TVP-ZERO-SRC------"
/* IPv6 from the VM's link-local fe80::ff:fe00:1 (the MAC's modified EUI-64) to
 * ff02::1, next header nh, payload length len */
.macro IP6H nh, len
    .fill 12, 1, 0
    .byte 0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd
    .byte 0x60, 0, 0, 0, 0, \len, \nh, 255
    .byte 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0, 1
    .byte 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
.endm
/* UDP from its own link-local: passes after the handover */
ipv6:
    IP6H 17, 18
    .ascii "TVP-IPV6----------"
ipv6_end:
/* A neighbour advertisement for the gateway's fe80::1 with the VM's MAC: the
 * gateway's IPv6 traffic would come to this VM */
spoof_na:
    IP6H 58, 50
    .byte 136, 0, 0, 0, 0x20, 0, 0, 0
    .byte 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
    .byte 2, 1, 2, 0, 0, 0, 0, 1
    .ascii "TVP-SPOOF-NA------"
spoof_na_end:
/* A router advertisement: a VM posing as the router */
spoof_ra:
    IP6H 58, 34
    .byte 134, 0, 0, 0, 64, 0, 0x07, 0x08
    .fill 8, 1, 0
    .ascii "TVP-SPOOF-RA------"
spoof_ra_end:
