/* A measured VM's stand-in guest with a disk: reads sectors 0 and 16 of the virtio-blk
 * disk through blkdrv.S (printed as blk.S prints them: "R0 s=<status> u=<used length>"
 * and the sector's first 32 bytes), then happy.S's mailbox path (attestation, handover)
 * and power-off. */
#define PRE_MAIN read_disk
#include "happy.S"
#include "blkdrv.S"

read_disk:
    call blk_init
    xor %edi, %edi
    xor %esi, %esi
    call blk_req
    xor %edi, %edi
    mov $16, %esi
    call blk_req
    ret

#include "blkreq.S"
