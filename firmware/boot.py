# boot.py on the node's flash: runs before main.py on every start. Nothing here may fail or
# block (a broken boot.py cannot be recovered without reflashing), so it only sets the garbage
# collector to run before the heap fragments: collect after every 16 KB allocated (why that
# much: firmware/node/app.py _GC_THRESHOLD).
import gc

gc.threshold(16384)
