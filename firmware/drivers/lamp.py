# Lamp dimming output: a PWM line into an LED driver's dimming input.
#
# Levels are perceived brightness in per mille (0..1000; the public API takes whole percent).
# The "gamma" curve maps them to duty through CIE 1931 lightness, so a linear fade looks even to
# the eye; "linear" writes the level as duty (for drivers that apply their own curve). Fades
# interpolate linearly in perceived level; update(now_ms) moves the output to where the fade
# should be now, so the step size follows however often the caller ticks.
import time

CIE_KNEE_PM = 80  # L* = 8: below it CIE lightness is linear in luminance
CIE_LINEAR_DIV = 9033  # Y = L* / 903.3, with L* in per mille of 100
CIE_SPAN = 1160  # Y = ((L* + 16) / 116) ** 3, in per mille: (pm + 160) / 1160


class Lamp:
    def __init__(self, pwm, *, curve="gamma", min_duty=0, max_duty=65535):
        if curve not in ("gamma", "linear"):
            raise ValueError("lamp: curve must be gamma or linear")
        if not 0 <= min_duty <= max_duty <= 65535:
            raise ValueError("lamp: duty range")
        self.pwm = pwm
        self.curve = curve
        self.min_duty = min_duty
        self.max_duty = max_duty
        self.pm = 0  # current perceived level, per mille
        self._from = 0
        self._to = 0
        self._t0 = 0
        self._dur = 0
        self.fading = False
        self.duty = -1
        self._write()

    @property
    def level(self):
        """Current level in whole percent."""
        return (self.pm + 5) // 10

    def duty_for(self, pm):
        """The duty_u16 value that gives perceived level `pm` (per mille); 0 is off."""
        if pm <= 0:
            return 0
        if pm >= 1000:
            return self.max_duty
        span = self.max_duty - self.min_duty
        if self.curve == "linear":
            return self.min_duty + span * pm // 1000
        if pm <= CIE_KNEE_PM:
            return self.min_duty + span * pm // CIE_LINEAR_DIV
        x = pm + 160
        return self.min_duty + span * x * x * x // (CIE_SPAN * CIE_SPAN * CIE_SPAN)

    def power_pm(self):
        """Share of rated power drawn now, per mille: an LED driver's power follows duty."""
        return self.duty * 1000 // 65535

    def set(self, pct):
        self.fading = False
        self.pm = _clamp_pct(pct) * 10
        self._write()

    def fade(self, pct, duration_ms, now_ms):
        """Start a fade from the current level; each update(now_ms) moves the output."""
        to = _clamp_pct(pct) * 10
        if duration_ms <= 0 or to == self.pm:
            self.set(pct)
            return
        self._from = self.pm
        self._to = to
        self._t0 = now_ms
        self._dur = duration_ms
        self.fading = True

    def update(self, now_ms):
        if self.fading:
            elapsed = time.ticks_diff(now_ms, self._t0)
            if elapsed >= self._dur:
                self.pm = self._to
                self.fading = False
            elif elapsed > 0:
                self.pm = self._from + (self._to - self._from) * elapsed // self._dur
        self._write()
        return self.level

    def target(self):
        return (self._to if self.fading else self.pm) // 10

    def _write(self):
        duty = self.duty_for(self.pm)
        if duty != self.duty:
            self.pwm.duty_u16(duty)
            self.duty = duty


def _clamp_pct(pct):
    if pct < 0:
        return 0
    return 100 if pct > 100 else int(pct)
