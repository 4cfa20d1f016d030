"""The client's rounds, transport-free: they talk to fl_server through ``port.ServerPort``."""
