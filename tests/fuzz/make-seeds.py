#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/ (committed; rerun after a wire-format change).

Each seed is a small well-formed input, so the fuzzers start from inputs that get deep into
the code: valid frame streams (fuzz-frames, with its 3 control bytes), error bodies, msgpack
objects of every type, and packed ipt.Sample messages (tests/proto/sample.proto).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def fnv1a(data, h=2166136261):
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


RAW, MSGPACK = fnv1a(b"raw"), fnv1a(b"msgpack")
DATA, END, MEMFD, ERROR, CRASH = 1, 2, 3, 4, 5


def hdr(kind, ser, length, check=True):
    h = struct.pack("<IBBHIIQI", 0x31465049, 1, kind, 0, ser, 0, length, 0)
    return h + struct.pack("<I", fnv1a(h) if check else 0)


def frame(kind, body=b"", ser=RAW):
    return hdr(kind, ser, len(body)) + body


def value(data, ser=RAW):
    return frame(DATA, data, ser) + hdr(END, ser, len(data))


def error_body(code, raised, kind, msg, bt):
    return struct.pack("<iiIII", code, raised, len(kind), len(msg), len(bt)) + kind + msg + bt


def crash_body(sig, addrs):
    return struct.pack("<iI", sig, len(addrs)) + b"".join(struct.pack("<Q", a) for a in addrs)


# fuzz-frames control bytes (see fuzz-frames.c): c0 = max_result | status << 3 | flags,
# c1 = memfd bits | serializer | size, c2 = checksum fix-up | chunk size.
def ctl(max_idx=6, status=0, c1=0, c2=0, canceled=False, timed_out=False):
    return bytes([max_idx | status << 3 | canceled << 6 | timed_out << 7, c1, c2])


IP_ERAISED, IP_EENCODE = -3000, -3003

frames = {
    "value": ctl() + value(b"hello"),
    "value-empty": ctl() + hdr(END, RAW, 0),
    "value-chunks": ctl(c2=7) + frame(DATA, b"abc") + frame(DATA, b"") + frame(DATA, b"defgh")
    + hdr(END, RAW, 8),
    "value-max16": ctl(max_idx=2) + value(b"0123456789abcdef"),
    "value-msgpack": ctl(c1=4) + value(b"\x82\xa1a\x01\xa1b\xc0", MSGPACK),
    "error-raised": ctl() + frame(ERROR, error_body(IP_ERAISED, 111, b"ECONNREFUSED",
                                                    b"cannot reach kilo", b"fn+0x1\nmain+0x2\n")),
    "error-encode": ctl() + frame(ERROR, error_body(IP_EENCODE, -3003, b"", b"bad", b"")),
    "crash": ctl(status=3) + frame(CRASH, crash_body(11, [0x401000, 0x401234, 0x7F0000001000])),
    "crash-core": ctl(status=4) + frame(CRASH, crash_body(11, [0x1])),
    "memfd": ctl(c1=1 | 2 | 2 << 3) + hdr(MEMFD, RAW, 100),
    "memfd-unsealed": ctl(c1=1 | 2 << 3) + hdr(MEMFD, RAW, 100),
    "truncated": ctl() + hdr(DATA, RAW, 5)[:10],
    "short-body": ctl(status=0) + hdr(DATA, RAW, 100) + b"x" * 10,
    # With the fix-up bit the harness recomputes every check: mutations of the other header
    # fields then reach the frame logic instead of dying at the checksum.
    "fixup-value": ctl(c2=0x80) + frame(DATA, b"xyz") + hdr(END, RAW, 3, check=False),
    "fixup-mixed": ctl(c2=0x80 | 5) + hdr(DATA, RAW, 2, check=False) + b"ab"
    + hdr(ERROR, RAW, 22, check=False) + error_body(IP_ERAISED, 1, b"k", b"m", b""),
    "canceled": ctl(status=5, canceled=True) + value(b"late"),
    "timed-out": ctl(status=5, timed_out=True) + frame(DATA, b"par"),
}

error_bodies = {
    "raised": error_body(IP_ERAISED, 111, b"ECONNREFUSED", b"cannot reach", b"a\nb\n"),
    "empty-strings": error_body(IP_EENCODE, 0, b"", b"", b""),
    "nul-bytes": error_body(-22, 22, b"K\0", b"m\0m", b"\0"),
    "short": error_body(-12, 0, b"", b"", b"")[:19],
}


def mp_str(s):
    n = len(s)
    if n < 32:
        return bytes([0xA0 | n]) + s
    return b"\xd9" + bytes([n]) + s


msgpack = {
    "nil": b"\xc0",
    "bools": b"\x92\xc3\xc2",
    "ints": b"\x9a\x00\x7f\xcc\x80\xcd\x01\x00\xce\x00\x01\x00\x00\xcf" + b"\xff" * 8
    + b"\xff\xe0\xd0\xdf\xd3\x80" + b"\x00" * 7,
    "floats": b"\x93\xca\x7f\x80\x00\x00\xcb\xff\xf8" + b"\x00" * 6 + b"\xca\x00\x00\x00\x01",
    "str-bin": b"\x94" + mp_str(b"") + mp_str(b"a\0b") + b"\xc4\x00" + b"\xc4\x03\x00\x01\x02",
    "ext": b"\x93\xd4\x2a\x01\xd6\xff\x00\x00\x00\x2a\xc7\x03\x05abc",
    "map": b"\x83" + mp_str(b"host") + mp_str(b"alpha.local") + mp_str(b"uname")
    + mp_str(b"Linux alpha 6.1.0 x86_64") + mp_str(b"elapsed_ms") + b"\xcb\x40\x09" + b"\x00" * 6,
    "nested": b"\x91" * 31 + b"\x07",
    "nested-maps": b"\x81\x00" * 16 + b"\xc0",
    "str16": b"\xda\x01\x00" + b"s" * 256,
    "array16": b"\xdc\x00\x03\x01\x02\x03",
    "map16": b"\xde\x00\x01\xa1k\xa1v",
}


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def key(field, wt):
    return varint(field << 3 | wt)


def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def zigzag(n):
    return (n << 1) ^ (n >> 63)


inner = ld(1, b"inner") + key(2, 0) + varint(zigzag(-(2**63))) + key(2, 0) + varint(zigzag(5))
packed_inner = ld(1, b"p") + ld(2, b"".join(varint(zigzag(v)) for v in (-1, 0, 1, 2**62)))
full = (key(1, 0) + varint(-(2**31)) + key(2, 0) + varint(2**63 - 1) + key(3, 0) + varint(2**64 - 1)
        + key(4, 1) + struct.pack("<d", -1.5) + key(5, 5) + struct.pack("<f", 3.25)
        + key(6, 0) + varint(1) + ld(7, "h\u00e9llo".encode()) + ld(8, b"\0a\0\xff")
        + key(9, 0) + varint(2) + ld(10, inner) + ld(11, inner) + ld(11, b"") + ld(11, packed_inner)
        + ld(12, b"") + ld(12, b"tag") + ld(13, b"the name"))
protobuf = {
    "minimal": key(1, 0) + varint(42),
    "full": full,
    "number": key(1, 0) + varint(1) + key(14, 0) + varint(-5),
    "unknown-field": key(1, 0) + varint(7) + ld(99, b"kept") + key(100, 5) + b"\0\0\0\0",
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("fuzz-frames", frames)
write("fuzz-error-body", error_bodies)
write("fuzz-msgpack", msgpack)
write("fuzz-protobuf", protobuf)
