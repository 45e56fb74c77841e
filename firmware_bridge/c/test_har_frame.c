/* Host tests of har_frame.h against the shared test vectors (firmware_bridge/test_vectors.json).
 * Build: make -C firmware_bridge host-test   (gcc -std=c99 -Wall -Wextra -Werror)
 * Prints one line per failure and a summary; exits non-zero if anything failed. */
#include <stdio.h>
#include <stdlib.h>

#include "har_frame.h"
#include "test_vectors.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                           \
    do {                                                           \
        ++checks;                                                  \
        if (!(cond)) {                                             \
            ++failures;                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);            \
            printf(__VA_ARGS__);                                   \
            printf("\n");                                          \
        }                                                          \
    } while (0)

static int same_float_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

static void print_hex(const char *label, const uint8_t *p, size_t n) {
    size_t i;
    printf("  %s:", label);
    for (i = 0; i < n; ++i) printf(" %02x", p[i]);
    printf("\n");
}

/* The encoder must reproduce the vector's wire bytes from its decoded fields. */
static void check_encode(const frame_vector_t *v) {
    uint8_t wire[HAR_MAX_WIRE_FRAME_LEN];
    size_t n = 0;
    if (v->expect == EXPECT_SAMPLE) {
        har_sample_t s;
        int i;
        s.seq = (uint16_t)v->seq;
        s.t_us = (uint32_t)v->t_us;
        for (i = 0; i < 3; ++i) {
            s.acc[i] = v->values[i];
            s.gyro[i] = v->values[3 + i];
        }
        n = har_pack_sample(&s, wire);
        CHECK(n == HAR_SAMPLE_WIRE_LEN, "%s: sample frame is %u bytes, expected %u", v->name, (unsigned)n, HAR_SAMPLE_WIRE_LEN);
    } else if (v->expect == EXPECT_HELLO) {
        n = har_pack_hello((uint8_t)v->version, (uint16_t)v->rate_hz, v->text, wire);
    } else if (v->expect == EXPECT_LOG) {
        n = har_pack_log(v->text, wire);
    } else {
        return;
    }
    CHECK(n == v->wire_len && memcmp(wire, v->wire, n) == 0, "%s: C encoder disagrees with the vector", v->name);
    if (n != v->wire_len || memcmp(wire, v->wire, n) != 0) {
        print_hex("C     ", wire, n);
        print_hex("vector", v->wire, v->wire_len);
    }
}

static void check_decode(const frame_vector_t *v) {
    har_frame_t f;
    har_status_t st;
    CHECK(v->wire_len >= 1 && v->wire[v->wire_len - 1] == 0, "%s: vector does not end in 0x00", v->name);
    CHECK(memchr(v->wire, 0, v->wire_len - 1) == NULL, "%s: 0x00 inside the COBS body", v->name);
    st = har_unpack_frame(v->wire, v->wire_len - 1, &f);
    switch (v->expect) {
    case EXPECT_SAMPLE: {
        int i;
        CHECK(st == HAR_OK && f.type == HAR_TYPE_SAMPLE, "%s: status %d type %u", v->name, (int)st, f.type);
        CHECK(f.sample.seq == v->seq, "%s: seq %u != %u", v->name, f.sample.seq, v->seq);
        CHECK(f.sample.t_us == (uint32_t)v->t_us, "%s: t_us %lu != %lu", v->name, (unsigned long)f.sample.t_us, v->t_us);
        for (i = 0; i < 3; ++i) {
            CHECK(same_float_bits(f.sample.acc[i], v->values[i]), "%s: acc[%d] %g != %g", v->name, i, (double)f.sample.acc[i], (double)v->values[i]);
            CHECK(same_float_bits(f.sample.gyro[i], v->values[3 + i]), "%s: gyro[%d] %g != %g", v->name, i, (double)f.sample.gyro[i], (double)v->values[3 + i]);
        }
        break;
    }
    case EXPECT_HELLO:
        CHECK(st == HAR_OK && f.type == HAR_TYPE_HELLO, "%s: status %d type %u", v->name, (int)st, f.type);
        CHECK(f.version == v->version && f.rate_hz == v->rate_hz, "%s: version %u rate %u", v->name, f.version, f.rate_hz);
        CHECK(strcmp(f.text, v->text) == 0, "%s: sensor '%s' != '%s'", v->name, f.text, v->text);
        break;
    case EXPECT_LOG:
        CHECK(st == HAR_OK && f.type == HAR_TYPE_LOG, "%s: status %d type %u", v->name, (int)st, f.type);
        CHECK(strcmp(f.text, v->text) == 0, "%s: text '%s' != '%s'", v->name, f.text, v->text);
        break;
    case EXPECT_UNKNOWN_TYPE:
        CHECK(st == HAR_OK && f.type == v->type, "%s: status %d type %u != %u", v->name, (int)st, f.type, v->type);
        break;
    case EXPECT_CRC_ERROR:
        CHECK(st == HAR_ERR_CRC, "%s: status %d, expected a CRC error", v->name, (int)st);
        break;
    case EXPECT_MALFORMED:
        CHECK(st == HAR_ERR_COBS || st == HAR_ERR_SHORT || st == HAR_ERR_LENGTH, "%s: status %d, expected malformed", v->name, (int)st);
        break;
    default:
        CHECK(0, "%s: unknown expectation %d", v->name, v->expect);
    }
}

static void check_cobs(const cobs_vector_t *v, unsigned index) {
    static uint8_t enc[400], dec[400];
    size_t n = har_cobs_encode(v->raw, v->raw_len, enc);
    long m;
    CHECK(n == v->encoded_len && memcmp(enc, v->encoded, n) == 0, "cobs vector %u: encoding differs (%u vs %u bytes)", index, (unsigned)n, (unsigned)v->encoded_len);
    m = har_cobs_decode(v->encoded, v->encoded_len, dec, sizeof dec);
    CHECK(m == (long)v->raw_len && memcmp(dec, v->raw, v->raw_len) == 0, "cobs vector %u: decoding differs (%ld vs %u bytes)", index, m, (unsigned)v->raw_len);
}

int main(void) {
    unsigned i;
    CHECK(har_crc16((const uint8_t *)CRC_CHECK_ASCII, strlen(CRC_CHECK_ASCII)) == CRC_CHECK_VALUE, "CRC check value 0x%04x", har_crc16((const uint8_t *)CRC_CHECK_ASCII, strlen(CRC_CHECK_ASCII)));
    for (i = 0; i < N_FRAME_VECTORS; ++i) {
        check_encode(&FRAME_VECTORS[i]);
        check_decode(&FRAME_VECTORS[i]);
    }
    for (i = 0; i < N_COBS_VECTORS; ++i) check_cobs(&COBS_VECTORS[i], i);
    /* Strings longer than the protocol allows are cut, never overflow the frame buffer. */
    {
        uint8_t wire[HAR_MAX_WIRE_FRAME_LEN];
        har_frame_t f;
        size_t n = har_pack_log("0123456789012345678901234567890123456789012345678901234567890123456789TOO-LONG", wire);
        CHECK(n <= HAR_MAX_WIRE_FRAME_LEN && har_unpack_frame(wire, n - 1, &f) == HAR_OK && strlen(f.text) == HAR_MAX_LOG_LEN, "long LOG not cut to 64 bytes");
        n = har_pack_hello(1, 50, "a-sensor-name-that-is-far-too-long", wire);
        CHECK(har_unpack_frame(wire, n - 1, &f) == HAR_OK && strlen(f.text) == HAR_MAX_SENSOR_NAME_LEN, "long sensor name not cut to 24 bytes");
    }
    printf("%s: %d checks, %d failures (%u frame vectors, %u COBS vectors)\n", failures ? "FAILED" : "OK", checks, failures,
           N_FRAME_VECTORS, N_COBS_VECTORS);
    return failures ? 1 : 0;
}
