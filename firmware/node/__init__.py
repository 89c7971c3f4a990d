# The node runtime (MicroPython only). main.py calls app.main().
#
#   app.py       start-up (RTC state, config, boot-loop guard, safe mode, the global exception
#                handler), a battery node's reporting cycle, deep sleep; forget(): modules a
#                stage is done with are dropped (RAM)
#   status.py    the status record and safe mode (loaded only when a status is due)
#   mains.py     the always-on loop of a mains-powered node (lighting) and its small CoAP server
#                for the gateway's wake-ups (POST /d)
#   config.py    config.json: defaults, validation (bad values fall back, errors reported)
#   cfgfile.py   writing config.json atomically (a downlink's change)
#   downlink.py  applying the gateway's downlinks (validated; refused ones reported)
#   send.py      what goes in each uplink, over the configured link; the flash ring behind it
#   link.py      what both links share: LinkDown, Refused, the CoAP POST, reading the answer
#   coaplink.py  CoAP over UDP: CON, RFC 7252 retransmission, OSCORE, Echo recovery
#   loralink.py  the same CoAP message in a LoRa frame: NON / CON for alarms, the duty-cycle
#                ledger before every transmission, an RX window RX_DELAY_MS after it
#   ring.py      store-and-forward: the flash ring that survives power loss mid-write
#   seqstore.py  OSCORE sequence numbers and record counters: RTC memory + flash reservations
#   rtcstate.py  what survives deep sleep in RTC memory
#   hw.py        drivers for the kind, built from the board and its pin map; the bin's ranger
#                powered, paced and stopped early
# Comments cost nothing on the node: bytecode drops them.
