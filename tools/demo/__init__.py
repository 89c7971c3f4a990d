"""The simulated city block behind `make demo` (see tools/demo/__main__.py).

city_block  which nodes, where, which kind and link (data)
scenario    the story: sensor timelines, the walker, narration cues (data)
clock       the city's virtual clock, which waits for the nodes
provision   the run folder: gateway config, keys, registry, accounts, node flash
bytecode    the firmware precompiled for the unix port
processes   child processes in their own process groups, stopped and reaped
nodes       node lives: battery nodes restarted at their wake-up time, lamps always on
narrator    the live narration and the facts it checks, from what reached upstream
runner      one run, from set-up to a clean stop
"""
