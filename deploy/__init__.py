"""How hefl runs: the one-command local demo and helpers to start its services."""
