"""Turns test_vectors.json into a C header for the host C tests (run by the Makefile at build time).

    python3 gen_vectors_header.py ../test_vectors.json > build/test_vectors.h

Float fields are written as the exact decimal of their binary32 value, so the C literal
cast to float is bit-identical to what the Python encoder packed.
"""
import json
import sys

EXPECT = {"sample": 0, "hello": 1, "log": 2, "unknown_type": 3, "crc_error": 4, "malformed": 5}


def c_bytes(hex_text: str) -> str:
    data = bytes.fromhex(hex_text)
    return "{" + ", ".join(f"0x{b:02x}" for b in data) + ("" if data else "0") + "}"


def c_string(text: str) -> str:
    return json.dumps(text)  # ASCII only in the vectors: JSON and C escapes agree


def main() -> None:
    vectors = json.load(open(sys.argv[1]))
    out = ["/* generated from test_vectors.json by gen_vectors_header.py: do not edit */", ""]
    out.append(f"#define CRC_CHECK_ASCII {c_string(vectors['crc_check']['ascii'])}")
    out.append(f"#define CRC_CHECK_VALUE 0x{vectors['crc_check']['crc']:04x}u")
    out.append("enum { EXPECT_SAMPLE, EXPECT_HELLO, EXPECT_LOG, EXPECT_UNKNOWN_TYPE, EXPECT_CRC_ERROR, EXPECT_MALFORMED };")
    out.append("typedef struct { const char *name; int expect; const uint8_t *wire; size_t wire_len;")
    out.append("  unsigned seq; unsigned long t_us; float values[6]; unsigned version; unsigned rate_hz; const char *text; unsigned type; } frame_vector_t;")
    for i, v in enumerate(vectors["frames"]):
        out.append(f"static const uint8_t frame_wire_{i}[] = {c_bytes(v['hex'])};")
    out.append("static const frame_vector_t FRAME_VECTORS[] = {")
    for i, v in enumerate(vectors["frames"]):
        f = v.get("fields", {})
        values = ", ".join(f"(float){f[k]!r}" for k in ("ax", "ay", "az", "gx", "gy", "gz")) if v["expect"] == "sample" else "0"
        text = f.get("sensor", f.get("text"))
        out.append(
            f"  {{{c_string(v['name'])}, {EXPECT[v['expect']]}, frame_wire_{i}, {len(v['hex']) // 2}, "
            f"{f.get('seq', 0)}u, {f.get('t_us', 0)}ul, {{{values}}}, {f.get('version', 0)}u, {f.get('rate_hz', 0)}u, "
            f"{c_string(text) if text is not None else 'NULL'}, {f.get('type', 0)}u}},")
    out.append("};")
    out.append(f"#define N_FRAME_VECTORS {len(vectors['frames'])}u")
    out.append("typedef struct { const uint8_t *raw; size_t raw_len; const uint8_t *encoded; size_t encoded_len; } cobs_vector_t;")
    for i, v in enumerate(vectors["cobs"]):
        out.append(f"static const uint8_t cobs_raw_{i}[] = {c_bytes(v['raw_hex'])};")
        out.append(f"static const uint8_t cobs_enc_{i}[] = {c_bytes(v['encoded_hex'])};")
    out.append("static const cobs_vector_t COBS_VECTORS[] = {")
    for i, v in enumerate(vectors["cobs"]):
        out.append(f"  {{cobs_raw_{i}, {len(v['raw_hex']) // 2}, cobs_enc_{i}, {len(v['encoded_hex']) // 2}}},")
    out.append("};")
    out.append(f"#define N_COBS_VECTORS {len(vectors['cobs'])}u")
    print("\n".join(out))


if __name__ == "__main__":
    main()
