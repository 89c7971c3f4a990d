"""Upstream sinks: where committed readings are forwarded (spool, MQTT, NGSI-LD)."""
