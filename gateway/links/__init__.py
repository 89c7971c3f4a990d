"""Links: how uplinks reach the gateway (CoAP/UDP, LoRa), one module each behind base.py."""
