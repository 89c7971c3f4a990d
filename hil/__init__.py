"""Hardware-in-the-loop rigs: a pytest plugin driving a simulated or a real ESP32 node.

plugin      the pytest plugin (--rig sim|serial, --port, --rig-config, --long)
rig         rigs and DUTs: deploy, reset, power, console, stimuli, observation
simserial   the sim board as a serial port mpremote uses (socket://)
simboard    launching sim nodes without a port (the firmware's own tests)
medium      the simulated LoRa radio medium
gateway     a real gateway process, its spool, web page and MQTT, as the rig sees them
gpio        the serial rig's stimuli from the Pi's GPIO (Blinka)
rigconfig   rig.toml
bench       the full-count figures (python -m hil.bench)
"""
