"""RecordIO framing and image records, byte for byte against dmlc's format."""
import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysight.errors import ClientError
from raysight.formats import recordio

MAGIC = struct.pack("<I", 0xCED7230A)


def test_single_record_bytes():
    # magic, lrecord = length 5 (cflag 0), payload, 3 zero bytes of padding
    assert recordio.encode_record(b"hello") == bytes.fromhex("0a23d7ce") + struct.pack("<I", 5) + b"hello\0\0\0"
    assert recordio.encode_record(b"") == MAGIC + b"\0\0\0\0"


def test_embedded_magic_splits_the_record_as_dmlc_does():
    payload = b"abcd" + MAGIC + b"efgh12"
    expected = (MAGIC + struct.pack("<I", (1 << 29) | 4) + b"abcd"
                + MAGIC + struct.pack("<I", (3 << 29) | 6) + b"efgh12" + b"\0\0")
    assert recordio.encode_record(payload) == expected
    assert recordio.read_record(io.BytesIO(expected)) == payload
    # magic at the very start and twice in a row: empty first and middle parts
    payload = MAGIC + MAGIC + b"xy"
    blob = recordio.encode_record(payload)
    assert blob == (MAGIC + struct.pack("<I", 1 << 29) + MAGIC + struct.pack("<I", 2 << 29)
                    + MAGIC + struct.pack("<I", (3 << 29) | 2) + b"xy\0\0")
    assert recordio.read_record(io.BytesIO(blob)) == payload
    # an unaligned magic is left alone
    payload = b"a" + MAGIC + b"bbb"
    assert recordio.encode_record(payload)[4:8] == struct.pack("<I", 8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64)
                | st.lists(st.sampled_from([b"\x0a", b"\x23", b"\xd7", b"\xce", MAGIC, b"zz"]), max_size=12)
                .map(b"".join), max_size=8))
def test_any_payloads_round_trip_with_offsets(payloads):
    buf = io.BytesIO()
    offsets = recordio.write_records(buf, payloads)
    data = buf.getvalue()
    assert len(data) % 4 == 0
    got = list(recordio.iter_records(io.BytesIO(data), "mem"))
    assert [p for _, p in got] == payloads
    assert [o for o, _ in got] == offsets
    for offset, payload in zip(offsets, payloads):  # every .idx offset reads its own record
        assert recordio.read_record(io.BytesIO(data[offset:])) == payload
        assert recordio.find_record_start(data, offset) == offset


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=6), st.integers(0, 400))
def test_resync_finds_the_next_record_start(payloads, cut):
    buf = io.BytesIO()
    offsets = recordio.write_records(buf, [MAGIC * 2 + p for p in payloads])
    data = buf.getvalue()
    cut = min(cut, len(data))
    following = [o for o in offsets if o >= cut]
    assert recordio.find_record_start(data, cut) == (following[0] if following else -1)


def test_bad_streams_are_named_with_offsets():
    good = recordio.encode_record(b"abcdefgh") + recordio.encode_record(b"ij")
    with pytest.raises(ClientError, match=r"f.rec at byte 0: bad magic 0x44434241"):
        list(recordio.iter_records(io.BytesIO(b"ABCD" + good[4:]), "f.rec"))
    with pytest.raises(ClientError, match=r"f.rec at byte 16: truncated record \(1 of 4 bytes\)"):
        list(recordio.iter_records(io.BytesIO(good[:-3]), "f.rec"))
    with pytest.raises(ClientError, match=r"f.rec at byte 16: truncated record header \(3 of 8 bytes\)"):
        list(recordio.iter_records(io.BytesIO(good[:19]), "f.rec"))
    assert len(list(recordio.iter_records(io.BytesIO(good), "f.rec"))) == 2


def test_image_header_matches_mxnet_pack():
    # mxnet.recordio.pack((0, 3.0, 7, 0), b"IMG"): struct 'IfQQ' then the bytes
    blob = recordio.pack_image(3.0, b"IMG", id=7)
    assert blob == struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"IMG"
    r = recordio.unpack_image(blob)
    assert (r.flag, list(r.label), r.id, r.image) == (0, [3.0], 7, b"IMG")
    # a label vector: flag = its length, header label 0, float32 values before the image
    blob = recordio.pack_image([1, 0, 1], b"IMG", id=9)
    assert blob == struct.pack("<IfQQ", 3, 0.0, 9, 0) + np.array([1, 0, 1], "<f4").tobytes() + b"IMG"
    r = recordio.unpack_image(blob)
    assert (r.flag, list(r.label), r.id, r.image) == (3, [1.0, 0.0, 1.0], 9, b"IMG")
    # detection layout [A, B, objects...] is just a longer vector
    det = [2, 5, 0, 0.1, 0.2, 0.5, 0.6, 1, 0.3, 0.3, 0.9, 0.8]
    assert np.allclose(recordio.unpack_image(recordio.pack_image(det, b"x")).label, det)
    with pytest.raises(ClientError, match="shorter than the 24-byte image header"):
        recordio.unpack_image(b"short")
    with pytest.raises(ClientError, match="promises 5 labels"):
        recordio.unpack_image(struct.pack("<IfQQ", 5, 0.0, 1, 0) + b"\0" * 8)


def test_idx_parse_and_format():
    text = recordio.format_idx([(1, 0), (5, 40)])
    assert text == "1\t0\n5\t40\n"
    assert recordio.parse_idx(text) == [(1, 0), (5, 40)]
    with pytest.raises(ClientError, match=r"x.idx line 1"):
        recordio.parse_idx("zero\tx\n", "x.idx")


def test_byte_ranges_cover_every_record_once(tmp_path):
    """Read tasks split a file at arbitrary byte offsets; each record lands in exactly one."""
    import os

    from raysight.sources import RecordIODatasource, read_range

    path = str(tmp_path / "r.rec")
    with open(path, "wb") as f:
        offsets = recordio.write_records(f, [os.urandom(n) for n in range(1, 3000, 7)] + [MAGIC * 5])
    size = os.path.getsize(path)
    for chunk in (1 << 20, 997, 4096, 13):
        source = RecordIODatasource([path], [size])
        ranges = source._ranges(path, size, chunk) if chunk >= 1 << 20 else \
            [(s, min(s + chunk, size)) for s in range(0, size, chunk)]
        seen = [o for s, e in ranges for t in read_range(path, s, e, False) for o in t.column("offset").to_pylist()]
        assert seen == offsets, chunk
