"""Compatibility with MXNet 1.x, checked against files MXNet itself wrote
(tests/fixtures/mxnet/make_fixtures.py, MXNet 1.9.1): raysight reads them record
for record, and writes byte-identical files for the same records, so MXNet reads
raysight's output (the generator also re-reads raysight.rec with MXNet)."""
import hashlib
import io
import json
import os

import numpy as np

from raysight.formats import recordio

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "mxnet")


def load(name):
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


def expected():
    return json.loads(load("records.json"))


def test_raysight_reads_what_mxnet_wrote():
    rec = load("mxnet.rec")
    got = list(recordio.iter_records(io.BytesIO(rec), "mxnet.rec"))
    idx = recordio.parse_idx(load("mxnet.idx").decode())
    assert [o for o, _ in got] == [offset for _, offset in idx]
    for (offset, payload), want in zip(got, expected(), strict=True):
        assert hashlib.sha256(payload).hexdigest() == want["payload_sha256"]
        r = recordio.unpack_image(payload)
        assert (r.id, r.flag) == (want["id"], want["flag"])
        assert np.allclose(r.label, want["label"])
        assert hashlib.sha256(r.image).hexdigest() == want["image_sha256"]


def test_raysight_writes_what_mxnet_writes():
    payloads = [payload for _, payload in recordio.iter_records(io.BytesIO(load("mxnet.rec")))]
    rebuilt = []
    for payload in payloads:
        r = recordio.unpack_image(payload)
        label = float(r.label[0]) if r.flag == 0 else r.label
        rebuilt.append(recordio.pack_image(label, r.image, id=r.id, id2=r.id2))
    assert rebuilt == payloads  # the IRHeader packing is mxnet.recordio.pack's
    buf = io.BytesIO()
    offsets = recordio.write_records(buf, rebuilt)
    assert buf.getvalue() == load("mxnet.rec")  # the framing is dmlc's, byte for byte
    ids = [recordio.unpack_image(p).id for p in rebuilt]
    assert recordio.format_idx(zip(ids, offsets)).encode() == load("mxnet.idx")
    # raysight.rec/.idx are the files MXNet read back in make_fixtures.py: what raysight writes
    # today must still be them, byte for byte, or MXNet's reading of them proves nothing
    assert buf.getvalue() == load("raysight.rec")
    assert recordio.format_idx(zip(ids, offsets)).encode() == load("raysight.idx")
