# Battery voltage through a resistor divider into an ADC pin. On the ESP32 read_uv() applies the
# factory eFuse calibration and is used when present; otherwise read_u16() is scaled by the
# ADC's full-scale voltage (about 3.3 V at 11 dB attenuation). A per-node calibration (gain in
# ppm and offset in mV, measured once against a meter) corrects the divider's tolerance.
#
# The divider is always connected, so its resistance is the battery budget: 2 x 1 MOhm (the
# default) draws 1.6 uA from 3.2 V, 2 x 100 kOhm 16 uA, a third of what 5 years on 2 x AA allow
# (bench/node.py). At 1 MOhm the ESP32's SAR ADC cannot charge its sampling capacitor through the
# divider's 500 kOhm in the sampling time (readings low and noisy): a 100 nF capacitor from the
# ADC pin to ground is the source it samples from instead. Each conversion takes a few pF worth
# of its charge (well under 0.1 %), and the divider keeps it charged (tau = 500 kOhm x 100 nF =
# 50 ms; settled 250 ms after the battery goes in, long before the first reading). What the
# pin's leakage current drops across 500 kOhm is a constant offset: the calibration removes it.


class Battery:
    def __init__(
        self,
        adc,
        *,
        r_top=1000000,
        r_bottom=1000000,
        full_scale_mv=3300,
        gain_ppm=1000000,
        offset_mv=0,
        samples=8,
    ):
        if r_bottom <= 0 or r_top < 0 or samples < 1:
            raise ValueError("battery: divider or samples")
        self.adc = adc
        self.r_top = r_top
        self.r_bottom = r_bottom
        self.full_scale_mv = full_scale_mv
        self.gain_ppm = gain_ppm
        self.offset_mv = offset_mv
        self.samples = samples
        self.use_uv = hasattr(adc, "read_uv")

    def pin_uv(self):
        """Mean voltage at the ADC pin in microvolts over `samples` readings."""
        total = 0
        for _ in range(self.samples):
            if self.use_uv:
                total += self.adc.read_uv()
            else:
                total += self.adc.read_u16() * self.full_scale_mv * 1000 // 65535
        return total // self.samples

    def read_mv(self):
        uv = self.pin_uv() * (self.r_top + self.r_bottom) // self.r_bottom
        mv = (uv * self.gain_ppm // 1000000 + 500) // 1000 + self.offset_mv
        return max(0, mv)
