#!/usr/bin/python3
"""Copies the BPF ELF objects embedded in a host binary (libbpf skeletons, systemd's BPF) out of it.

    extract-bpf-elf.py BINARY OUTPREFIX
    extract-bpf-elf.py --license OBJECT    prints the object's "license" section (what the kernel is told), or "-"

A blob is a 64-bit little-endian ELF header whose e_machine is EM_BPF (247); its extent is the furthest of the
section header table's end and every section's file extent. Each blob is written to OUTPREFIX.N.o (N from 0, in
file order) and its name printed, so the same binary always gives the same files. Exit 1 if none is found.
"""
import struct
import sys

EM_BPF = 247
SHT_NOBITS = 8


def blobs(data):
    at = data.find(b"\x7fELF\x02\x01\x01")
    while at >= 0:
        end = extent(data, at)
        if end:
            yield data[at:end]
            at = data.find(b"\x7fELF\x02\x01\x01", end)
        else:
            at = data.find(b"\x7fELF\x02\x01\x01", at + 1)


def extent(data, at):
    """The end offset of a well-formed BPF ELF at `at`, or None."""
    if at + 64 > len(data):
        return None
    (e_type, e_machine, _ver, _entry, _phoff, e_shoff, _flags, e_ehsize, _phentsize, _phnum, e_shentsize,
     e_shnum, _shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, at + 16)
    if e_machine != EM_BPF or e_type != 1 or e_ehsize != 64 or e_shentsize != 64 or e_shnum == 0:
        return None
    end = e_shoff + e_shnum * 64
    if at + end > len(data):
        return None
    for i in range(e_shnum):
        _name, sh_type, _fl, _addr, sh_offset, sh_size = struct.unpack_from("<IIQQQQ", data, at + e_shoff + i * 64)
        if sh_type != SHT_NOBITS:
            end = max(end, sh_offset + sh_size)
    if at + end > len(data):
        return None
    return at + end


def license_of(data):
    """The NUL-terminated string in the section named "license" of a 64-bit ELF (either byte order), or None."""
    if data[:5] != b"\x7fELF\x02" or data[5:6] not in (b"\x01", b"\x02") or len(data) < 64:
        return None
    e = "<" if data[5] == 1 else ">"
    e_shoff, = struct.unpack_from(e + "Q", data, 40)
    e_shnum, e_shstrndx = struct.unpack_from(e + "HH", data, 60)
    try:
        sections = [struct.unpack_from(e + "IIQQQQ", data, e_shoff + i * 64) for i in range(e_shnum)]
        strtab = sections[e_shstrndx][4]
        for name, _type, _fl, _addr, off, size in sections:
            end = data.index(b"\0", strtab + name)
            if data[strtab + name:end] == b"license":
                return data[off:off + size].split(b"\0")[0].decode("ascii", "replace")
    except (struct.error, IndexError, ValueError):
        return None
    return None


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--license":
        with open(sys.argv[2], "rb") as f:
            print(license_of(f.read()) or "-")
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    n = 0
    for blob in blobs(data):
        name = f"{sys.argv[2]}.{n}.o"
        with open(name, "wb") as out:
            out.write(blob)
        print(name)
        n += 1
    sys.exit(0 if n else 1)


if __name__ == "__main__":
    main()
