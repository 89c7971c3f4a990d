# The node firmware (MicroPython only): boards/ (the only code touching hardware), drivers/
# (one module per part), kinds/ (each node kind's sampling and local logic) and node/ (runtime).
