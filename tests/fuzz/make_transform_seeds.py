#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_transform to tests/fuzz/corpus/transform/.

Each seed is three header bytes (operation, flags, extra; see tests/fuzz/fuzz_transform.cpp)
and a payload. Run from anywhere; existing seeds are overwritten, none are removed.
"""
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "transform")

# Operations (byte 0) and Content-Format indexes (bits 0-3 of byte 1).
TRANSFORM, RESOLVE, RENDER, TO_CBOR, RESPONSE = range(5)
ABSENT, TEXT, LINK, OCTET, JSON, CBOR, SENML_JSON, SENML_CBOR = range(8)
UNKNOWN = 11
ENVELOPE, RAW = 0x10, 0x20
SPLIT = SENML = 0x40
KEY = NOW = 0x80


def header(op, flags=0, extra=0):
    return bytes([op, flags, extra])


def cbor_head(major, arg):
    m = major << 5
    if arg < 24:
        return bytes([m | arg])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * width):
            return bytes([m | info]) + arg.to_bytes(width, "big")
    raise ValueError(arg)


def cbor(value, senml=False):
    """A small CBOR encoder (integers, text, bytes, bool, null, float64, list, dict)."""
    labels = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1,
              "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return cbor_head(0, value) if value >= 0 else cbor_head(1, -1 - value)
    if isinstance(value, float):
        import struct
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, bytes):
        return cbor_head(2, len(value)) + value
    if isinstance(value, str):
        data = value.encode()
        return cbor_head(3, len(data)) + data
    if isinstance(value, list):
        return cbor_head(4, len(value)) + b"".join(cbor(v, senml) for v in value)
    if isinstance(value, dict):
        out = cbor_head(5, len(value))
        for k, v in value.items():
            out += cbor(labels[k] if senml and k in labels else k) + cbor(v)
        return out
    raise TypeError(value)


# RFC 8428 §5.1.1, §5.1.2, §5.1.3 (multiple data points, relative times), §5.1.4 (collection
# of resources), §5.1.6 (multiple measurements with bver) in their JSON form.
RFC8428 = {
    "single": [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}],
    "multiple": [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ],
    "relative": [
        {"bn": "urn:dev:ow:10e2073a0108006:", "bt": 1.276020076001e+09, "bu": "A",
         "bver": 5, "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
        {"n": "current", "v": 1.7},
    ],
    "collection": [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320078429e+09, "n": "temperature",
         "u": "Cel", "v": 27.2},
        {"n": "humidity", "u": "%RH", "v": 80},
        {"n": "open", "vb": False},
        {"n": "label", "vs": "kitchen"},
        {"n": "raw", "vd": "AQI"},
        {"n": "energy", "u": "J", "s": 1200, "bs": 5},
    ],
    "base_value": [{"bn": "dev:", "bv": 100, "n": "x", "v": 1.5}, {"n": "y", "v": -2, "t": 1}],
}

RFC8428_EXAMPLE3_CBOR = bytes.fromhex(
    "87a721781b75726e3a6465763a6f773a3130653230373361303130383030363a22fb41d303a15b00106223"
    "61412005006776 6f6c7461676501615602fb405e066666666666a3006763757272656e740624 02fb3ff3"
    "333333333333a3006763757272656e74062302fb3ff4cccccccccccda3006763757272656e74062202fb3f"
    "f6666666666666a3006763757272656e74062102f93e00a3006763757272656e74062002fb3ff999999999"
    "999aa3006763757272656e74060002fb3ffb333333333333".replace(" ", ""))

seeds = {}


def dumps(value):
    return json.dumps(value, separators=(",", ":")).encode()


for name, pack in RFC8428.items():
    seeds[f"senml_json_{name}"] = header(TRANSFORM, SENML_JSON) + dumps(pack)
    seeds[f"senml_cbor_{name}"] = header(TRANSFORM, SENML_CBOR) + cbor(pack, senml=True)
    seeds[f"resolve_json_{name}"] = header(RESOLVE, NOW) + dumps(pack)
    seeds[f"resolve_cbor_{name}"] = header(RESOLVE, SENML | NOW) + cbor(pack, senml=True)
    seeds[f"command_senml_{name}"] = header(TO_CBOR, SENML) + dumps(pack)
seeds["senml_cbor_rfc_example3"] = header(TRANSFORM, SENML_CBOR) + RFC8428_EXAMPLE3_CBOR
seeds["resolve_cbor_rfc_example3"] = header(RESOLVE, SENML) + RFC8428_EXAMPLE3_CBOR

# RFC 8949 Appendix A values and a few structures, as ct 60.
CBOR_VALUES = {
    "uint64": "1bffffffffffffffff", "negint64": "3bffffffffffffffff", "half": "f97bff",
    "half_subnormal": "f90001", "float": "fa47c35000", "double": "fb3ff199999999999a",
    "nan": "f97e00", "simple": "f8ff", "undefined": "f7", "tagged_date": "c074323031332d30332d"
    "32315432303a30343a30305a", "bytes": "4401020304", "text_utf8": "64f0908591",
    "indefinite_bytes": "5f42010243030405ff", "indefinite_text": "7f657374726561646d696e67ff",
    "indefinite_array": "9f018202039f0405ffff", "indefinite_map": "bf6346756ef563416d7421ff",
    "map_int_keys": "a201020304", "map_array_key": "a1810102", "map_nested_key": "a1a1010203",
    "deep_64": "81" * 64 + "00",
    # Regressions found by this fuzzer: 65 levels with an empty innermost array, map keys
    # that are maps nested 40 deep (exponential key text).
    "deep_65_empty": "81" * 64 + "80", "nested_map_keys": "a1" * 40 + "00" * 41,
}
for name, hexdata in CBOR_VALUES.items():
    seeds[f"cbor_{name}"] = header(TRANSFORM, CBOR) + bytes.fromhex(hexdata)
seeds["cbor_object"] = header(TRANSFORM, CBOR) + cbor(
    {"a": 1, "b": [True, False, None], "c": "x", "d": -5, "e": 1.5, "f": b"\x00\xff"})

# Text, JSON, link format and other formats, in json / envelope / raw mode.
seeds["text_number"] = header(TRANSFORM, TEXT) + b" 21.5\n"
seeds["text_exponent"] = header(TRANSFORM, ABSENT | ENVELOPE) + b"-1e400"
seeds["text_string"] = header(TRANSFORM, TEXT) + "on \u00e9\"\\".encode()
seeds["json_object"] = header(TRANSFORM, JSON) + b'{ "b": 1, "a": [true, null, 1e3, "\\u00e9"] }'
seeds["json_nul_trailing"] = header(TRANSFORM, JSON) + b"{}\0\x82"  # a regression
seeds["json_deep_64"] = header(TRANSFORM, JSON) + b"[" * 64 + b"]" * 64
seeds["link_format"] = header(TRANSFORM, LINK | ENVELOPE) + \
    b'</sensors/temp>;rt="temperature-c";if="sensor";obs,</a>;rt="x";rt="y";ct=40'
seeds["octet_stream"] = header(TRANSFORM, OCTET) + b"\x00\x01\xfe\xff"
seeds["unknown_raw"] = header(TRANSFORM, UNKNOWN | RAW) + b"xyz"

# renderPayload: byte 2 bits 3-7 are the pointer length, the pointer starts the payload.
def render(flags, pointer, payload, now=0):
    return header(RENDER, flags, (len(pointer) << 3) | now) + pointer + payload


seeds["render_json_pointer"] = render(JSON | KEY, b"/a/b/0", b'{"a":{"b":["x","y"]}}')
seeds["render_escaped_pointer"] = render(JSON | ENVELOPE, b"/a~1b/m~0n", b'{"a/b":{"m~n":7}}')
seeds["render_cbor_pointer"] = render(CBOR | KEY, b"/t/1", cbor({"t": [1, 2]}))
seeds["render_senml_split"] = render(SENML_JSON | SPLIT | KEY | ENVELOPE, b"/v",
                                     dumps(RFC8428["relative"]))
seeds["render_senml_cbor"] = render(SENML_CBOR | KEY, b"", RFC8428_EXAMPLE3_CBOR, now=2)
seeds["render_text"] = render(TEXT | KEY, b"", b"21.5")

# Commands: JSON text to CBOR.
for name, text in {"number": "1.5", "object": '{"on":true,"level":42,"name":"k\u00fcche"}',
                   "array": "[1,-1,18446744073709551615,-9223372036854775808,0.1]",
                   "string": '"\\u0000"'}.items():
    seeds[f"command_{name}"] = header(TO_CBOR) + text.encode()

# Command responses.
seeds["response_cbor"] = header(RESPONSE, CBOR) + bytes.fromhex("820102")
seeds["response_bad_json"] = header(RESPONSE, JSON) + b"not json"
seeds["response_binary"] = header(RESPONSE, CBOR) + b"\xff\xfe"

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
