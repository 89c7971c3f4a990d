# Drivers, one module per part. Each takes its bus and pins from the caller (the board) and never
# imports machine, so the same code runs on an ESP32 and on the unix port against a scripted bus.
#
# What a driver expects of the objects it is given (the machine API subset it uses):
#   spi   write(buf), write_readinto(wbuf, rbuf)           (machine.SPI, mode 0, MSB first)
#   i2c   readfrom_mem(addr, reg, n), writeto_mem(addr, reg, buf)     (machine.I2C)
#   uart  any(), read(n) -> bytes or None, write(buf)                 (machine.UART)
#   pin   value() / value(v); irq(handler=..., trigger=...) where the driver needs edges
#   adc   read_u16(); read_uv() when the port has a calibrated reading (ESP32)
#   pwm   duty_u16(v)
# Time is injected where a driver waits or measures (defaults: the time module's ticks_ms,
# ticks_diff, sleep_ms), so tests drive a scripted clock.
#
# Constructors (arguments after `*` are keyword-only; every one has a datasheet default):
#   sx127x.SX127x(spi, cs, *, reset=None, dio0=None, freq_hz=868100000, sf=7, bw_hz=125000,
#                 cr=1, preamble=8, explicit_header=True, crc=True, ldro=None, power_dbm=14,
#                 pa_boost=True, sync_word=0x12, sleep_ms=None, ticks_ms=None)
#       cr 1..4 = 4/5..4/8; ldro None = on when a symbol lasts 16 ms or more
#       .begin()  reset, check RegVersion 0x12, LoRa mode, modem settings, STANDBY
#       .send(payload, timeout_ms=5000) -> bool (TxDone came); .start_send(payload); .tx_done()
#       .receive(timeout_ms) -> bytes or None (one RXSINGLE window with a symbol timeout)
#       .start_receive(continuous=True); .poll() -> bytes or None (CRC errors dropped and
#       counted in .crc_errors);  .rssi_dbm, .snr_db, .snr_x4 of the last frame;
#       .sleep(); .standby(); .airtime_ms(n); .frames_sent
#   qmc5883l.QMC5883L(i2c, *, addr=0x0D, odr_hz=10, range_gauss=8, osr=512, sleep_ms=None)
#       .begin(); .ready() -> bool; .read(timeout_ms=None) -> (x, y, z) counts, or None on
#       overflow; OSError when absent or no data; .lsb_per_gauss; .read_temp_raw(); .health()
#   a02yyuw.A02YYUW(uart, *, trigger_byte=None, min_mm=30, max_mm=4500, ticks_ms=None,
#                   sleep_ms=None)
#   jsnsr04t.JSNSR04T(uart, *, triggered=True, min_mm=250, max_mm=4500, ticks_ms=None,
#                     sleep_ms=None)
#       .read_mm(timeout_ms=500) -> int mm or None (both)
#   hcsr04.HCSR04(trigger, echo, pulse_us, *, sleep_us=None, timeout_us=30000)
#       pulse_us(pin, level, timeout_us) behaves like machine.time_pulse_us
#       .read_mm(temp_c_x10=200) -> int mm or None (no echo / outside 2-400 cm)
#   pir.PIR(pin, *, debounce_ms=50, ticks_ms=None)
#       .attach(callback, trigger=1) -> callback(now_ms) per debounced rising edge;
#       .motion() -> bool; .poll(now_ms=None) -> True on a new debounced rising edge
#   ld2410.LD2410(uart)
#       .poll() -> newest target dict or None: {"state", "moving_cm", "moving_energy",
#                  "static_cm", "static_energy", "detect_cm"};  .presence -> bool
#   pulse.PulseCounter(pin=None, *, counter=None, debounce_ms=20, counter_bits=0, ticks_ms=None)
#       counter: the board's pulse_counter(pin) (value() = total edges); else the pin's IRQ
#       counts (call .attach(trigger=2) once);  .count() -> total pulses
#   leakprobe.LeakProbe(pin=None, *, adc=None, power=None, wet_level=0, wet_below=20000,
#                       hysteresis=2000, settle_ms=1, sleep_ms=None)
#       .wet() -> bool
#   lamp.Lamp(pwm, *, curve="gamma", min_duty=0, max_duty=65535)
#       .set(pct); .fade(pct, duration_ms, now_ms); .update(now_ms) -> level %; .level;
#       .target(); .fading; .duty; .power_pm() (share of rated power, per mille)
#   battery.Battery(adc, *, r_top=1000000, r_bottom=1000000, full_scale_mv=3300,
#                   gain_ppm=1000000, offset_mv=0, samples=8)
#       .read_mv() -> battery mV
