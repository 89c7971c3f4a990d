# Battery voltage through a resistor divider into an ADC pin. On the ESP32 read_uv() applies the
# factory eFuse calibration and is used when present; otherwise read_u16() is scaled by the
# ADC's full-scale voltage (about 3.3 V at 11 dB attenuation). A per-node calibration (gain in
# ppm and offset in mV, measured once against a meter) corrects the divider's tolerance.


class Battery:
    def __init__(
        self,
        adc,
        *,
        r_top=100000,
        r_bottom=100000,
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
