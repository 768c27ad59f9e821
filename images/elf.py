"""What the entry bundle's builder (images/bundle.py) needs to know of an ELF64 file: the libraries it
names (``DT_NEEDED``), its ``DT_RUNPATH``/``DT_RPATH``, its dynamic loader (``PT_INTERP``) and its machine.

Read from the file itself rather than with ``ldd``: ``ldd`` runs the host's loader and answers with the
HOST's libraries, while the bundle is assembled from a Debian root filesystem that is not the host's.
Standard library only; imports no sibling module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 1, 5, 15, 29
MACHINES = {62: "x86_64", 183: "aarch64", 21: "ppc64le", 22: "s390x", 243: "riscv64"}  # e_machine → uname -m


@dataclass
class Elf:
    machine: str
    interpreter: str | None = None
    needed: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)


def read_elf(path: Path) -> Elf | None:
    """The facts above, or None when `path` is no ELF64 file."""
    data = path.read_bytes()
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    end = "<" if data[5] == 1 else ">"
    (e_machine,) = struct.unpack_from(end + "H", data, 18)
    (phoff,) = struct.unpack_from(end + "Q", data, 32)
    phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    elf = Elf(MACHINES.get(e_machine, f"elf-machine-{e_machine}"))
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz): to map DT_STRTAB's address to the file
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(end + "IIQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif p_type == PT_INTERP:
            elf.interpreter = data[offset:offset + filesz].rstrip(b"\0").decode()
    if dynamic is None:
        return elf  # static
    entries = [struct.unpack_from(end + "qQ", data, dynamic[0] + j * 16) for j in range(dynamic[1] // 16)]
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return elf
    base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), strtab)

    def string(at: int) -> str:
        start = base + at
        return data[start:data.index(b"\0", start)].decode()

    for tag, value in entries:
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            elf.needed.append(string(value))
        elif tag in (DT_RPATH, DT_RUNPATH):
            elf.runpath += [p for p in string(value).split(":") if p]
    return elf
