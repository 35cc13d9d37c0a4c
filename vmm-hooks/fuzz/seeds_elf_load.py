#!/usr/bin/env python3
"""Writes the seed corpus of the elf_load target (corpus/elf_load): byte 0 picks the
memory size (FIRMWARE_MIN_GPA + (b+1) * 16 KiB), the rest is the ELF. Seeds: the
firmware's real program header layout (target/firmware/tvp-firmware.elf, its segments'
file bytes cut to 64 bytes each so inputs stay small), the test workload's text moved
to 1 MiB, and a firmware with a PVH note. Run from the repository root."""
import struct, pathlib

OUT = pathlib.Path("vmm-hooks/fuzz/corpus/elf_load")
MIN = 0x100000

def elf(entry, segs, notes=()):
    """segs: (paddr, data, memsz, type)"""
    phs = [(1, p, d, m) for p, d, m in segs] + [(4, 0, n, len(n)) for n in notes]
    off = 64 + 56 * len(phs)
    hdr = bytearray(b"\x7fELF" + bytes([2, 1, 1]) + bytes(9))
    hdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, len(phs), 64, 0, 0)
    table, body = b"", b""
    for t, p, d, m in phs:
        table += struct.pack("<IIQQQQQQ", t, 5, off + len(body), p, p, len(d), m, 0x1000)
        body += d
    return bytes(hdr) + table + body

def write(name, size_byte, image):
    (OUT / name).write_bytes(bytes([size_byte]) + image)

OUT.mkdir(parents=True, exist_ok=True)
fw = pathlib.Path("target/firmware/tvp-firmware.elf").read_bytes()
phoff, = struct.unpack_from("<Q", fw, 32)
phnum, = struct.unpack_from("<H", fw, 56)
entry, = struct.unpack_from("<Q", fw, 24)
segs = []
for i in range(phnum):
    t, _, o, _, p, fs, ms, _ = struct.unpack_from("<IIQQQQQQ", fw, phoff + 56 * i)
    if t == 1:
        segs.append((p, fw[o:o + min(fs, 64)], ms))
end = max(p + m for p, _, m in segs)
write("firmware-layout", (end - MIN + 0x3fff) // 0x4000, elf(entry, segs))
hello = pathlib.Path("pxe-firmware/protocol/fuzz/corpus/workload_elf/hello.elf").read_bytes()
text = hello[0x1000:0x1053]
write("hello-at-1mib", 0, elf(MIN, [(MIN, text, len(text))]))
note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", MIN)
write("pvh-note", 3, elf(MIN, [(MIN, text, 0x8000), (MIN + 0x8000, b"\x90" * 32, 0x1000)], [note]))
