/*
 * har_frame.h - framing of the HAR IMU wire protocol (spec: firmware_bridge/PROTOCOL.md).
 *
 * Header-only, portable C99/C++ (no allocation, no libc beyond <stdint.h>/<stddef.h>/<string.h>),
 * used by the Arduino sketch and compiled on the host with gcc -Wall -Wextra -Werror by the tests.
 *
 * A frame on the wire is COBS(type | payload | crc16_le) followed by one 0x00 byte.
 * crc16 is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)
 * over type and payload. Integers little-endian, floats IEEE-754 binary32 little-endian;
 * the byte order is produced with shifts, so this also works on big-endian hosts.
 */
#ifndef HAR_FRAME_H
#define HAR_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAR_PROTOCOL_VERSION 1u
#define HAR_TYPE_SAMPLE 0x01u
#define HAR_TYPE_HELLO 0x02u
#define HAR_TYPE_LOG 0x03u

#define HAR_SAMPLE_PAYLOAD_LEN 30u
#define HAR_HELLO_HEAD_LEN 3u
#define HAR_MAX_SENSOR_NAME_LEN 24u
#define HAR_MAX_LOG_LEN 64u
/* Largest decoded frame: LOG = type + 64 + crc. */
#define HAR_MAX_RAW_FRAME_LEN (1u + HAR_MAX_LOG_LEN + 2u)
/* COBS adds at most one byte per 254 (frames here are < 254 bytes: exactly one), plus the 0x00. */
#define HAR_MAX_WIRE_FRAME_LEN (HAR_MAX_RAW_FRAME_LEN + 2u)
#define HAR_SAMPLE_WIRE_LEN (1u + HAR_SAMPLE_PAYLOAD_LEN + 2u + 1u + 1u) /* 35 bytes */

/* ---- CRC-16/CCITT-FALSE, bitwise: 8 shifts per byte, no 512-byte table in a 2 KB-RAM chip ---- */
static inline uint16_t har_crc16_update(uint16_t crc, uint8_t byte) {
    uint8_t bit;
    crc ^= (uint16_t)((uint16_t)byte << 8);
    for (bit = 0; bit < 8u; ++bit) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static inline uint16_t har_crc16(const uint8_t *data, size_t len) {
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) crc = har_crc16_update(crc, data[i]);
    return crc;
}

/* ---- COBS ---- */
/* Encodes len bytes of in into out (capacity >= len + len/254 + 1); returns the encoded
 * length, without the trailing 0x00 delimiter. in and out must not overlap. */
static inline size_t har_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t read = 0, write = 1, code_at = 0;
    uint8_t code = 1;
    while (read < len) {
        if (in[read] == 0) {
            out[code_at] = code;
            code_at = write++;
            code = 1;
        } else {
            out[write++] = in[read];
            if (++code == 0xFFu) {
                out[code_at] = code;
                /* A full block at the very end needs no further code byte (as in the cobs package). */
                if (read + 1u == len) return write;
                code_at = write++;
                code = 1;
            }
        }
        ++read;
    }
    out[code_at] = code;
    return write;
}

/* Decodes one COBS chunk (no 0x00 inside, delimiter not included) into out (capacity cap).
 * Returns the decoded length, or -1 if the chunk is not valid COBS or does not fit. */
static inline long har_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap) {
    size_t read = 0, write = 0;
    while (read < len) {
        uint8_t code = in[read++];
        uint8_t i;
        if (code == 0) return -1;
        if (read + (size_t)(code - 1u) > len) return -1;
        for (i = 1; i < code; ++i) {
            if (in[read] == 0 || write >= cap) return -1;
            out[write++] = in[read++];
        }
        if (code != 0xFFu && read < len) {
            if (write >= cap) return -1;
            out[write++] = 0;
        }
    }
    return (long)write;
}

/* ---- little-endian field packing ---- */
static inline void har_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}
static inline void har_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}
static inline void har_put_f32(uint8_t *p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits); /* float and uint32_t share byte order on every target we know */
    har_put_u32(p, bits);
}
static inline uint16_t har_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static inline uint32_t har_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline float har_get_f32(const uint8_t *p) {
    uint32_t bits = har_get_u32(p);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- frames ---- */
/* Appends the CRC to raw[0..body_len) and COBS-encodes it into wire (capacity
 * HAR_MAX_WIRE_FRAME_LEN), adding the 0x00 delimiter. Returns the number of wire bytes. */
static inline size_t har_finish_frame(uint8_t *raw, size_t body_len, uint8_t *wire) {
    size_t n;
    har_put_u16(raw + body_len, har_crc16(raw, body_len));
    n = har_cobs_encode(raw, body_len + 2u, wire);
    wire[n] = 0;
    return n + 1u;
}

typedef struct {
    uint16_t seq;
    uint32_t t_us;
    float acc[3]; /* g, gravity included */
    float gyro[3]; /* rad/s */
} har_sample_t;

static inline size_t har_pack_sample(const har_sample_t *s, uint8_t *wire) {
    uint8_t raw[1u + HAR_SAMPLE_PAYLOAD_LEN + 2u];
    uint8_t i;
    raw[0] = HAR_TYPE_SAMPLE;
    har_put_u16(raw + 1, s->seq);
    har_put_u32(raw + 3, s->t_us);
    for (i = 0; i < 3u; ++i) {
        har_put_f32(raw + 7 + 4u * i, s->acc[i]);
        har_put_f32(raw + 19 + 4u * i, s->gyro[i]);
    }
    return har_finish_frame(raw, 1u + HAR_SAMPLE_PAYLOAD_LEN, wire);
}

/* sensor: NUL-terminated ASCII, cut at 24 bytes. */
static inline size_t har_pack_hello(uint8_t version, uint16_t rate_hz, const char *sensor, uint8_t *wire) {
    uint8_t raw[1u + HAR_HELLO_HEAD_LEN + HAR_MAX_SENSOR_NAME_LEN + 2u];
    size_t n = 0;
    raw[0] = HAR_TYPE_HELLO;
    raw[1] = version;
    har_put_u16(raw + 2, rate_hz);
    while (sensor != NULL && sensor[n] != '\0' && n < HAR_MAX_SENSOR_NAME_LEN) {
        raw[1u + HAR_HELLO_HEAD_LEN + n] = (uint8_t)sensor[n];
        ++n;
    }
    return har_finish_frame(raw, 1u + HAR_HELLO_HEAD_LEN + n, wire);
}

/* text: NUL-terminated ASCII, cut at 64 bytes. */
static inline size_t har_pack_log(const char *text, uint8_t *wire) {
    uint8_t raw[HAR_MAX_RAW_FRAME_LEN];
    size_t n = 0;
    raw[0] = HAR_TYPE_LOG;
    while (text != NULL && text[n] != '\0' && n < HAR_MAX_LOG_LEN) {
        raw[1u + n] = (uint8_t)text[n];
        ++n;
    }
    return har_finish_frame(raw, 1u + n, wire);
}

/* ---- unpacking one frame (host tests, and a device that receives frames) ---- */
typedef enum {
    HAR_OK = 0,
    HAR_ERR_COBS = 1, /* not valid COBS, or longer than any frame */
    HAR_ERR_SHORT = 2, /* fewer than 3 decoded bytes */
    HAR_ERR_CRC = 3,
    HAR_ERR_LENGTH = 4 /* known type with a payload length it cannot have */
} har_status_t;

typedef struct {
    uint8_t type;
    uint8_t payload_len;
    uint8_t payload[HAR_MAX_RAW_FRAME_LEN];
    /* Filled for known types: */
    har_sample_t sample;
    uint8_t version;
    uint16_t rate_hz;
    char text[HAR_MAX_LOG_LEN + 1u]; /* HELLO sensor name or LOG text, NUL-terminated */
} har_frame_t;

/* chunk: the wire bytes of one frame without the 0x00 delimiter. */
static inline har_status_t har_unpack_frame(const uint8_t *chunk, size_t len, har_frame_t *f) {
    uint8_t raw[HAR_MAX_RAW_FRAME_LEN];
    long n = har_cobs_decode(chunk, len, raw, sizeof raw);
    size_t body, i;
    memset(f, 0, sizeof *f);
    if (n < 0) return HAR_ERR_COBS;
    if (n < 3) return HAR_ERR_SHORT;
    body = (size_t)n - 2u;
    if (har_crc16(raw, body) != har_get_u16(raw + body)) return HAR_ERR_CRC;
    f->type = raw[0];
    f->payload_len = (uint8_t)(body - 1u);
    memcpy(f->payload, raw + 1, f->payload_len);
    if (f->type == HAR_TYPE_SAMPLE) {
        if (f->payload_len != HAR_SAMPLE_PAYLOAD_LEN) return HAR_ERR_LENGTH;
        f->sample.seq = har_get_u16(f->payload);
        f->sample.t_us = har_get_u32(f->payload + 2);
        for (i = 0; i < 3u; ++i) {
            f->sample.acc[i] = har_get_f32(f->payload + 6 + 4u * i);
            f->sample.gyro[i] = har_get_f32(f->payload + 18 + 4u * i);
        }
    } else if (f->type == HAR_TYPE_HELLO) {
        if (f->payload_len < HAR_HELLO_HEAD_LEN || f->payload_len > HAR_HELLO_HEAD_LEN + HAR_MAX_SENSOR_NAME_LEN)
            return HAR_ERR_LENGTH;
        f->version = f->payload[0];
        f->rate_hz = har_get_u16(f->payload + 1);
        memcpy(f->text, f->payload + HAR_HELLO_HEAD_LEN, f->payload_len - HAR_HELLO_HEAD_LEN);
    } else if (f->type == HAR_TYPE_LOG) {
        if (f->payload_len > HAR_MAX_LOG_LEN) return HAR_ERR_LENGTH;
        memcpy(f->text, f->payload, f->payload_len);
    }
    return HAR_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* HAR_FRAME_H */
