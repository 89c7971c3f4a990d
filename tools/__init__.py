"""The technicians' tools: flash, provision, check and decode nodes."""
