"""upscale-relay: submit Midjourney upscales, verify provider callbacks, fan events out."""

__version__ = "0.1.0"
