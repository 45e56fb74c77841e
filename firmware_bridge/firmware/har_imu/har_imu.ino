/*
 * har_imu - IMU firmware for the HAR pipeline (wire protocol: firmware_bridge/PROTOCOL.md).
 *
 * Reference board: Arduino Uno / Nano (ATmega328P, 16 MHz) with an MPU-6050 on I2C
 * (wiring and porting notes: firmware_bridge/README.md). Every 20 ms a Timer1 compare
 * interrupt ticks; the main loop reads the sensor, converts to g and rad/s and sends one
 * SAMPLE frame. HELLO at boot and every 5 s. seq and t_us come from the tick count, so a
 * tick the loop could not serve shows up on the host as a sequence gap, never as drift.
 *
 * Build options (compile-time defines):
 *   HAR_SYNTHETIC_SENSOR=1  no I2C at all: a deterministic motion signal instead of the
 *                           MPU-6050 (for the emulator and bench tests).
 *   HAR_BAUD                serial speed, default 115200 (8N1).
 *
 * In the Arduino IDE: copy firmware_bridge/c/har_frame.h next to this file.
 */
#include <Arduino.h>
#include <math.h>

#include "har_frame.h"

#ifndef HAR_SYNTHETIC_SENSOR
#define HAR_SYNTHETIC_SENSOR 0
#endif
#ifndef HAR_BAUD
#define HAR_BAUD 115200
#endif

#if !HAR_SYNTHETIC_SENSOR
#include <Wire.h>
#endif

#define HAR_RATE_HZ 50u
#define HAR_TICK_US (1000000ul / HAR_RATE_HZ)
#define HAR_HELLO_EVERY_TICKS (5u * HAR_RATE_HZ)

/* Timer1 in CTC mode, prescaler 64: 16 MHz / 64 = 250 kHz, 5000 counts per 20 ms. */
#define HAR_TIMER1_PRESCALER 64ul
#define HAR_TIMER1_TOP (F_CPU / HAR_TIMER1_PRESCALER / HAR_RATE_HZ - 1ul)
#if HAR_TIMER1_TOP > 65535ul || (F_CPU % (HAR_TIMER1_PRESCALER * HAR_RATE_HZ)) != 0
#error "Timer1 cannot hit 50 Hz exactly at this F_CPU with prescaler 64: pick another prescaler"
#endif

static volatile uint32_t g_ticks = 0;  // 50 Hz ticks since boot, written only by the ISR

ISR(TIMER1_COMPA_vect) { ++g_ticks; }

static void timer1_start(void) {
  noInterrupts();
  TCCR1A = 0;
  TCCR1B = 0;
  TCNT1 = 0;
  OCR1A = (uint16_t)HAR_TIMER1_TOP;
  TCCR1B = _BV(WGM12) | _BV(CS11) | _BV(CS10);  // CTC on OCR1A, clk/64
  TIMSK1 = _BV(OCIE1A);
  interrupts();
}

static uint32_t ticks_now(void) {
  uint32_t t;
  noInterrupts();  // a 32-bit read is 4 instructions on AVR: keep the ISR out
  t = g_ticks;
  interrupts();
  return t;
}

static uint8_t g_wire[HAR_MAX_WIRE_FRAME_LEN];

static void send_hello(void) {
#if HAR_SYNTHETIC_SENSOR
  size_t n = har_pack_hello(HAR_PROTOCOL_VERSION, HAR_RATE_HZ, "synthetic", g_wire);
#else
  size_t n = har_pack_hello(HAR_PROTOCOL_VERSION, HAR_RATE_HZ, "MPU-6050", g_wire);
#endif
  Serial.write(g_wire, n);
}

static void send_log(const char *text) {
  size_t n = har_pack_log(text, g_wire);
  Serial.write(g_wire, n);
}

#if HAR_SYNTHETIC_SENSOR
/* A 10 s periodic "walking" pattern, gravity on +x like the HAPT phone on the waist.
 * firmware_bridge/emulate.py computes the same signal to check the emulated frames. */
static bool sensor_begin(void) { return true; }

static bool sensor_read(uint32_t tick, float acc[3], float gyro[3]) {
  const float two_pi = 6.2831853f;
  float t = (float)(tick % 500ul) / (float)HAR_RATE_HZ;  // bounded argument: exact 10 s period
  float step = sinf(two_pi * 1.8f * t);
  float sway = sinf(two_pi * 0.9f * t);
  acc[0] = 1.0f + 0.25f * step;
  acc[1] = 0.10f * sway;
  acc[2] = 0.05f * step * sway;
  gyro[0] = 0.20f * sway;
  gyro[1] = 0.50f * step;
  gyro[2] = -0.30f * sway;
  return true;
}
#else
/* MPU-6050 at I2C address 0x68 (AD0 low). Ranges: +-4 g, +-500 deg/s. Its digital
 * low-pass (DLPF_CFG = 4: 21 Hz accel, 20 Hz gyro) keeps the signal below the 25 Hz
 * Nyquist limit of 50 Hz sampling; the sensor samples internally at 1 kHz and we read the
 * latest filtered value on each tick. */
#define MPU_ADDR 0x68
#define MPU_REG_SMPLRT_DIV 0x19
#define MPU_REG_CONFIG 0x1A
#define MPU_REG_GYRO_CONFIG 0x1B
#define MPU_REG_ACCEL_CONFIG 0x1C
#define MPU_REG_ACCEL_XOUT_H 0x3B
#define MPU_REG_PWR_MGMT_1 0x6B
#define MPU_REG_WHO_AM_I 0x75
#define MPU_ACCEL_LSB_PER_G 8192.0f  // AFS_SEL = 1 (+-4 g)
#define MPU_GYRO_LSB_PER_DPS 65.5f   // FS_SEL = 1 (+-500 deg/s)
#define DEG_TO_RAD_F 0.017453293f

/* Sensor axes -> board axes. Change the rows when the board is mounted differently:
 * each row picks a sensor axis (0, 1, 2) and its sign. */
static const int8_t kAxisIndex[3] = {0, 1, 2};
static const int8_t kAxisSign[3] = {1, 1, 1};

static bool mpu_write(uint8_t reg, uint8_t value) {
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(reg);
  Wire.write(value);
  return Wire.endTransmission() == 0;
}

static bool sensor_begin(void) {
  Wire.begin();
  Wire.setClock(400000);
  Wire.setWireTimeout(3000, true);  // a stuck bus must not hang the loop (core >= 1.8.3)
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(MPU_REG_WHO_AM_I);
  if (Wire.endTransmission(false) != 0 || Wire.requestFrom(MPU_ADDR, 1) != 1) return false;
  uint8_t who = Wire.read();
  if (who != 0x68 && who != 0x72 && who != 0x70) return false;  // MPU-6050 and common clones
  return mpu_write(MPU_REG_PWR_MGMT_1, 0x01)     // wake up, clock from the X gyro PLL
         && mpu_write(MPU_REG_SMPLRT_DIV, 0x00)  // 1 kHz internal rate with the DLPF on
         && mpu_write(MPU_REG_CONFIG, 0x04)      // DLPF 21 Hz / 20 Hz
         && mpu_write(MPU_REG_GYRO_CONFIG, 1 << 3)
         && mpu_write(MPU_REG_ACCEL_CONFIG, 1 << 3);
}

static bool sensor_read(uint32_t tick, float acc[3], float gyro[3]) {
  (void)tick;
  uint8_t raw[14];
  uint8_t i;
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(MPU_REG_ACCEL_XOUT_H);
  if (Wire.endTransmission(false) != 0 || Wire.requestFrom(MPU_ADDR, 14) != 14) return false;
  for (i = 0; i < 14; ++i) raw[i] = Wire.read();
  for (i = 0; i < 3; ++i) {
    uint8_t a = (uint8_t)kAxisIndex[i];
    int16_t acc_raw = (int16_t)((raw[2 * a] << 8) | raw[2 * a + 1]);
    int16_t gyro_raw = (int16_t)((raw[8 + 2 * a] << 8) | raw[8 + 2 * a + 1]);  // bytes 6-7 are temperature
    acc[i] = kAxisSign[i] * (acc_raw / MPU_ACCEL_LSB_PER_G);
    gyro[i] = kAxisSign[i] * (gyro_raw / MPU_GYRO_LSB_PER_DPS * DEG_TO_RAD_F);
  }
  return true;
}
#endif

static uint32_t g_served = 0;  // last tick the loop handled
static bool g_sensor_ok = false;

void setup() {
  Serial.begin(HAR_BAUD);
  Serial.write((uint8_t)0);  // a delimiter first: the host drops whatever partial bytes it holds
  send_hello();
  g_sensor_ok = sensor_begin();
  if (!g_sensor_ok) send_log("MPU-6050 not found at I2C 0x68: check wiring");
  timer1_start();
}

void loop() {
  uint32_t now = ticks_now();
  if (now == g_served) return;
  g_served = now;  // ticks missed in between become seq gaps on the host
  if (now % HAR_HELLO_EVERY_TICKS == 0) send_hello();
  if (!g_sensor_ok) {
    if (now % HAR_RATE_HZ == 0) {  // retry once a second, tell the host why there is no data
      g_sensor_ok = sensor_begin();
      if (!g_sensor_ok) send_log("MPU-6050 not found at I2C 0x68: check wiring");
    }
    return;
  }
  har_sample_t s;
  s.seq = (uint16_t)(now - 1u);  // the first tick is seq 0
  s.t_us = (now - 1u) * HAR_TICK_US;  // the sampling instant on the crystal's clock, wraps at 2^32
  if (!sensor_read(now - 1u, s.acc, s.gyro)) {
    send_log("I2C read failed");
    g_sensor_ok = sensor_begin();
    return;
  }
  size_t n = har_pack_sample(&s, g_wire);
  Serial.write(g_wire, n);
}
