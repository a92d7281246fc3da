"""MXNet / dmlc RecordIO, byte for byte (dmlc-core recordio.h, mxnet recordio.py).

Record = magic u32 | lrecord u32 | payload | zero pad to 4 bytes, little-endian;
lrecord = cflag << 29 | length. A payload holding the magic word at a 4-byte
aligned offset is split there into parts (cflag 1 first, 2 middle, 3 last) and
the magic bytes are dropped; the reader puts them back. MXNet has no maintained
pure-Python reader, hence this module.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from raysight.errors import ClientError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_LENGTH = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24


def encode_record(payload: bytes) -> bytes:
    """One logical record as dmlc's RecordIOWriter::WriteRecord writes it."""
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"record of {len(payload)} bytes exceeds RecordIO's {MAX_LENGTH}")
    out = bytearray()
    view = memoryview(payload)
    n = len(payload)
    start = 0
    for i in range(0, n - n % 4, 4):
        if view[i:i + 4] == MAGIC_BYTES:
            out += MAGIC_BYTES + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start))
            out += view[start:i]
            start = i + 4
    out += MAGIC_BYTES + struct.pack("<I", ((3 if start else 0) << 29) | (n - start))
    out += view[start:]
    out += b"\0" * ((4 - n % 4) % 4)
    return bytes(out)


def read_record(stream: BinaryIO, source: str = "<recordio>", offset: int | None = None) -> bytes | None:
    """The next logical record from `stream`, or None at a clean end of file."""
    got = _read(stream, source, offset)
    return None if got is None else got[0]


def iter_records(stream: BinaryIO, source: str = "<recordio>", offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) for every record until end of file; `offset` is where
    `stream` starts in its file, for messages and .idx offsets."""
    while True:
        got = _read(stream, source, offset)
        if got is None:
            return
        yield offset, got[0]
        offset += got[1]


def _read(stream: BinaryIO, source: str, offset: int | None) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    consumed = 0
    while True:
        header = stream.read(8)
        if not header and not parts:
            return None
        where = f"{source} at byte {offset + consumed}" if offset is not None else source
        if len(header) < 8:
            raise ClientError(f"{where}: truncated record header ({len(header)} of 8 bytes)")
        magic, lrecord = struct.unpack("<II", header)
        if magic != MAGIC:
            raise ClientError(f"{where}: bad magic 0x{magic:08X}, expected 0x{MAGIC:08X} (not RecordIO, "
                              "or an offset that is not a record start)")
        cflag, length = lrecord >> 29, lrecord & MAX_LENGTH
        if cflag > 3 or (not parts and cflag in (2, 3)) or (parts and cflag in (0, 1)):
            raise ClientError(f"{where}: unexpected part flag {cflag}")
        padded = length + (4 - length % 4) % 4
        body = stream.read(padded)
        if len(body) < padded:
            raise ClientError(f"{where}: truncated record ({len(body)} of {padded} bytes)")
        parts.append(body[:length])
        consumed += 8 + padded
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts), consumed


def write_records(stream: BinaryIO, payloads) -> list[int]:
    """Write payloads; return each record's start offset (for an .idx)."""
    offsets = []
    pos = stream.tell()
    for payload in payloads:
        blob = encode_record(payload)
        offsets.append(pos)
        stream.write(blob)
        pos += len(blob)
    return offsets


def find_record_start(data: bytes, start: int = 0) -> int:
    """First 4-byte-aligned offset ≥ start in `data` (offsets relative to a 4-aligned
    file position) where a record begins: the magic word then cflag 0 or 1. Aligned
    magic words inside payloads were escaped by the writer, so this cannot misfire.
    Returns -1 when there is none."""
    i = start + (-start) % 4
    while True:
        i = data.find(MAGIC_BYTES, i)
        if i < 0 or i + 8 > len(data):
            return -1
        if i % 4 == 0 and (struct.unpack_from("<I", data, i + 4)[0] >> 29) in (0, 1):
            return i
        i += 1


# -- image records (IRHeader) ----------------------------------------------------------


@dataclass
class ImageRecord:
    flag: int
    label: np.ndarray  # float32: one value when flag == 0, else `flag` values
    id: int
    id2: int
    image: bytes


def pack_image(label, image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """mxnet.recordio.pack: a scalar label → flag 0; a vector → flag = its length."""
    if np.isscalar(label):
        return struct.pack(IR_FORMAT, 0, float(label), id, id2) + image
    values = np.asarray(label, dtype="<f4").ravel()
    return struct.pack(IR_FORMAT, values.size, 0.0, id, id2) + values.tobytes() + image


def unpack_image(payload: bytes, source: str = "<record>") -> ImageRecord:
    """mxnet.recordio.unpack."""
    if len(payload) < IR_SIZE:
        raise ClientError(f"{source}: record of {len(payload)} bytes is shorter than the 24-byte image header")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    if flag > 0:
        end = IR_SIZE + 4 * flag
        if len(payload) < end:
            raise ClientError(f"{source}: header promises {flag} labels but the record ends first")
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE).astype(np.float32)
        return ImageRecord(flag, labels, id_, id2, payload[end:])
    return ImageRecord(0, np.asarray([label], dtype=np.float32), id_, id2, payload[IR_SIZE:])


# -- .idx ------------------------------------------------------------------------------


def parse_idx(text: str, source: str = "<idx>") -> list[tuple[int, int]]:
    """(key, byte offset) pairs, in file order."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            entries.append((int(fields[0]), int(fields[1])))
        except (ValueError, IndexError):
            raise ClientError(f"{source} line {lineno}: expected 'key<TAB>offset', got '{line[:80]}'") from None
    return entries


def format_idx(entries) -> str:
    return "".join(f"{key}\t{offset}\n" for key, offset in entries)
