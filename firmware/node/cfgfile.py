# Writing config.json (node/config.py documents it): apart from the validation tables, so a
# downlink that changes a setting saves it without loading them in the middle of a cycle.

import json
import os


def save(board, cfg, name="config.json"):
    """Replace the config file atomically: a power cut leaves the old file or the new one."""
    tmp = name + ".new"
    with board.open(tmp, "w") as f:
        f.write(json.dumps(cfg))
        f.flush()
    os.rename(board.path(tmp), board.path(name))
