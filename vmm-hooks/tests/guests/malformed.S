/* Each malformed and out-of-order request, then a boot failure closing the mailbox. */
#include "lib.S"

/* raw header: magic, version, command, length, reserved; then ring */
#define RAW(magic, ver, cmd, len, rsv) \
    movl $magic, MBOX_REQ; movw $ver, MBOX_REQ + 4; movw $cmd, MBOX_REQ + 6; \
    movl $len, MBOX_REQ + 8; movl $rsv, MBOX_REQ + 12; call ring

main:
    RAW(0x12345678, MBOX_VERSION, CMD_GET_VERSION, 0, 0)      /* bad magic */
    RAW(REQ_MAGIC, 7, CMD_GET_VERSION, 0, 0)                  /* bad version */
    RAW(REQ_MAGIC, MBOX_VERSION, 99, 0, 0)                    /* unknown command */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_TUNNEL, 31, 0)           /* short measurement */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_QUOTE, 65, 0)            /* nonce too long */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_QUOTE, 4, 0)             /* nonce too short */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_GET_VERSION, 0xffffffff, 0) /* huge length */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_GET_VERSION, 0, 1)       /* reserved set */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_QUOTE, 16, 0)            /* quote before tunnel */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_HANDOVER, 32, 0)         /* handover before tunnel */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_BOOT_FAILED, 3, 0)       /* bad reason length */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_TUNNEL, 32, 0)           /* ok */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_TUNNEL, 32, 0)           /* second tunnel */
    movl $7, MBOX_REQ + 16
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_BOOT_FAILED, 4, 0)       /* ok, closes */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_GET_VERSION, 0, 0)       /* closed */
    RAW(REQ_MAGIC, MBOX_VERSION, CMD_QUOTE, 16, 0)            /* closed */
    call puts_done
    jmp power_off
