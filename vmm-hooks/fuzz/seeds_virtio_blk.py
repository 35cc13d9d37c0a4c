#!/usr/bin/env python3
"""Writes the virtio_blk fuzz target's seeds (corpus/virtio_blk): a driver that sets
the queue up and reads sectors across chunks, the same read of a tampered chunk, a
write, a read past the end, a read into the configuration page, a descriptor loop,
and event-index suppression. Input format: fuzz_targets/virtio_blk.rs."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "virtio_blk")
DESC, AVAIL, USED, DATA, STATUS = 0x13000, 0x14000, 0x15000, 0x16000, 0x12100
NONE = 4  # no chunk tampered


def setup(size_log2=2):
    return bytes([1, size_log2]) + struct.pack("<HHH", DESC // 16, AVAIL // 2, USED // 4)


def go(event_idx=False):
    return bytes([2, 1 if event_idx else 0])


def request(kind, sector, data=DATA, length=512, flags=2, status=STATUS):
    return bytes([4, kind]) + struct.pack("<IHHBH", sector, data // 16, length, flags, status // 2)


def desc(i, addr, length, flags, nxt):
    return bytes([3, i]) + struct.pack("<IIHH", addr, length, flags, nxt)


def offer(head=0, flags=0, used_event=0):
    return bytes([5]) + struct.pack("<HHB", head, flags, used_event & 0xff)


SEEDS = {
    "read-across-chunks": bytes([NONE]) + setup() + go() + request(0, 6, length=4096) + request(0, 24),
    "read-tampered-chunk": bytes([1]) + setup() + go() + request(0, 6, length=4096) + request(0, 0),
    "write-refused": bytes([NONE]) + setup() + go() + request(1, 0, flags=0) + request(8, 0, length=20),
    "read-past-end": bytes([NONE]) + setup() + go() + request(0, 25) + request(0, 0xFFFFFFFF),
    "read-into-config-page": bytes([NONE]) + setup() + go() + request(0, 0, data=0x10000),
    "descriptor-loop": bytes([NONE]) + setup() + go()
    + desc(0, 0x12000, 16, 1, 1) + desc(1, DATA, 512, 3, 0) + offer(),
    "event-idx": bytes([NONE]) + setup(3) + go(event_idx=True) + request(0, 1) + offer(0, 1, 0xff),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
