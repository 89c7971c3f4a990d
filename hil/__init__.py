"""Hardware-in-the-loop rigs: a pytest plugin driving a simulated or a real ESP32 node."""
