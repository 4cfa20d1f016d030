"""How hefl runs: the one-command local demo (its service launcher is ``harness.services``)."""
