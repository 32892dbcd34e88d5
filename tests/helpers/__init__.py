"""Test helpers: real servers on 127.0.0.1 and recording stand-ins."""
