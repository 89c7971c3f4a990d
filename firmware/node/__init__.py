# The node runtime (MicroPython only). main.py calls app.main().
#
#   app.py       start-up (RTC state, config, boot-loop guard, safe mode, the global exception
#                handler), a battery node's reporting cycle, deep sleep
#   mains.py     the always-on loop of a mains-powered node (lighting) and its small CoAP server
#                for the gateway's wake-ups (POST /d)
#   config.py    config.json: defaults, validation (bad values fall back, errors reported)
#   downlink.py  applying the gateway's downlinks (validated; refused ones reported)
#   coaplink.py  CoAP over UDP: CON, RFC 7252 retransmission, OSCORE, Echo recovery
#   loralink.py  the same CoAP message in a LoRa frame: NON / CON for alarms, the duty-cycle
#                ledger before every transmission, an RX window after it
#   ring.py      store-and-forward: the flash ring that survives power loss mid-write
#   seqstore.py  OSCORE sequence numbers and record counters: RTC memory + flash reservations
#   rtcstate.py  what survives deep sleep in RTC memory
#   hw.py        drivers for the kind, built from the board and its pin map
# Comments cost nothing on the node: bytecode drops them.
