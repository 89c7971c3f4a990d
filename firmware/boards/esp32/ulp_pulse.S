# The leak node's water-meter pulse counter, run by the ESP32's ULP FSM coprocessor while the
# main CPU sleeps (and while it is awake: one counter, always). Syntax: micropython-esp32-ulp
# (esp32_ulp), assembled on the host by tools/ulp.py; the image carries the binary and the word
# address of every .global label below (ulp_pulse.py at the flash root).
#
# The ULP timer starts the program every sampling period (firmware/boards/esp32/ulp.py sets it:
# 50 ms); each run samples the meter's RTC GPIO once and HALTs. Per run:
#   - quiet time: `ticks` counts samples; every `unit` samples (1 s) `quiet` grows by one unit
#     (saturating at 0xffff), and when it reaches `dry_units` (3600: one hour without a pulse)
#     `dry` counts one dry period. A counted edge restarts both.
#   - debounce: a sample that differs from the debounced `level` bumps `run`; one that agrees
#     clears it; `debounce` disagreeing samples in a row make the new level the debounced one
#     (a reed's millisecond bounce, or a spike, lasts one sample at most).
#   - a debounced rising edge is one pulse: `count_lo` +1, carried into `count_hi` (32 bits),
#     inside a sequence lock (`seq`) so that the CPU never reads half an update.
# The main CPU only reads these words after start-up (32-bit reads are atomic; every value it
# needs is a counter it differences), so it never writes under the program's feet. ST writes the ULP's PC into
# a word's upper half: readers mask with 0xffff.
#
# Registers: r0 (JUMPR compares it), r1 and r2 scratch, r3 the address of the word at hand.
# Flags: JUMP ..., ov right after ADD (carry out of 16 bits) or SUB (borrow: a < b); JUMP ..., eq
# right after any ALU operation whose result is zero.

.set RTC_GPIO_IN_REG, 0x3ff48424    # DR_REG_RTCIO_BASE + 0x24: RTC_GPIO_IN_NEXT in bits 31:14

.data
# set by the board before ulp.run()
.global io
io:         .long 0     # RTC GPIO number of the meter input (0..15)
.global debounce
debounce:   .long 0     # samples in a row a new level must hold
.global unit
unit:       .long 0     # samples per unit of quiet time
.global dry_units
dry_units:  .long 0     # a quiet run of this many units is one dry period
# kept by the program
.global seq
seq:        .long 0     # odd while count_lo/count_hi are being updated
.global count_lo
count_lo:   .long 0     # debounced rising edges, low 16 bits
.global count_hi
count_hi:   .long 0     # ... and high 16 bits
.global level
level:      .long 2     # debounced input level; 2: nothing sampled yet
.global run
run:        .long 0     # samples in a row that disagreed with level
.global ticks
ticks:      .long 0     # samples since quiet last grew
.global quiet
quiet:      .long 0     # units since the last counted edge (0xffff: that many or more)
.global dry
dry:        .long 0     # quiet runs that reached dry_units (wraps at 16 bits)

.text
.global entry
entry:
    # -- quiet time: one more sample since the last unit
    move r3, ticks
    ld r0, r3, 0
    add r0, r0, 1
    move r2, unit
    ld r1, r2, 0
    sub r1, r0, r1
    jump keep_ticks, ov         # ticks + 1 < unit: not a whole unit yet
    move r0, 0
    st r0, r3, 0
    move r3, quiet
    ld r0, r3, 0
    add r0, r0, 1
    jump sample, ov             # saturated: a longer run than 18 h stays at 0xffff
    st r0, r3, 0
    move r2, dry_units
    ld r1, r2, 0
    sub r1, r0, r1
    jump dry_period, eq         # the run just reached dry_units
    jump sample
dry_period:
    move r3, dry
    ld r0, r3, 0
    add r0, r0, 1
    st r0, r3, 0
    jump sample
keep_ticks:
    st r0, r3, 0

sample:
    # -- the input: bit `io` of the RTC GPIO levels (RTC GPIO 0..15 in bits 29:14)
    move r3, io
    ld r1, r3, 0
    reg_rd RTC_GPIO_IN_REG, 29, 14
    rsh r0, r0, r1
    and r2, r0, 1               # r2: this sample
    move r3, level
    ld r1, r3, 0
    move r0, r1
    jumpr first, 2, ge          # the first sample only sets the level
    sub r0, r2, r1
    jump agree, eq

    # -- disagrees with the debounced level: one more sample in a row
    move r3, run
    ld r0, r3, 0
    add r0, r0, 1
    st r0, r3, 0
    move r3, debounce
    ld r1, r3, 0
    sub r0, r0, r1
    jump done, ov               # run < debounce: not held long enough yet
    move r3, level
    st r2, r3, 0
    move r3, run
    move r0, 0
    st r0, r3, 0
    move r0, r2
    jumpr done, 1, lt           # a falling edge: the pulse's other half, not counted

    # -- a rising edge: one pulse. `seq` is odd while the two halves change, so a reader
    #    that sees the same even seq before and after reading them has a consistent pair.
    move r3, seq
    ld r0, r3, 0
    add r0, r0, 1
    st r0, r3, 0
    move r3, count_lo
    ld r0, r3, 0
    add r0, r0, 1
    jump carry, ov              # the low half wrapped to 0
    st r0, r3, 0
    jump counted
carry:
    st r0, r3, 0
    move r3, count_hi
    ld r0, r3, 0
    add r0, r0, 1
    st r0, r3, 0
counted:
    move r3, seq
    ld r0, r3, 0
    add r0, r0, 1
    st r0, r3, 0
    # the quiet time starts again
    move r0, 0
    move r3, quiet
    st r0, r3, 0
    move r3, ticks
    st r0, r3, 0
    halt

first:
    move r3, level
    st r2, r3, 0
agree:
    move r3, run
    move r0, 0
    st r0, r3, 0
done:
    halt
