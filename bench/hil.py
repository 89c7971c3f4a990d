"""HIL rig figures (flash, provision, deep-sleep cycles, lighting wave, LoRa duty cycle)."""

from hil.bench import main

__all__ = ["main"]
