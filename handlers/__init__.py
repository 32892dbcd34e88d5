"""Plug-ins of the relay: providers (where upscales go) and sinks (where events go)."""
