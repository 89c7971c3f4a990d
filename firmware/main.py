# main.py on the node's flash (copied to / next to the firmware/ and protocol/ packages).
# Everything, the global exception handler included, is in firmware/node/app.py; this file stays
# two lines so a technician can always read what boots. Safe mode, after repeated failed boots,
# returns here and leaves the REPL free: see firmware/node/app.py for recovery.
from firmware.node import app

app.main()
