/* Drives the virtio-blk disk through blkdrv.S: prints " q=<QUEUE_READY read back>",
 * then per request "R<type> s=<status byte> u=<used length>" and the first 32 bytes of
 * the 512-byte buffer (filled with '.' before each request; '_' for zeros). Requests:
 * read sector 0, read sector 8, read sector 16, write sector 0, read sector 1000000
 * (past the end), GET_ID. */
#include "lib.S"
#include "blkdrv.S"

main:
    call blk_init
    xor %edi, %edi
    xor %esi, %esi
    call blk_req
    xor %edi, %edi
    mov $8, %esi
    call blk_req
    xor %edi, %edi
    mov $16, %esi
    call blk_req
    mov $1, %edi
    xor %esi, %esi
    call blk_req
    xor %edi, %edi
    mov $1000000, %esi
    call blk_req
    mov $8, %edi
    xor %esi, %esi
    call blk_req
    call puts_done
    jmp power_off

#include "blkreq.S"
