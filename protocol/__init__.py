"""The wire protocol shared by the ESP32 firmware (MicroPython) and the gateway (CPython)."""
