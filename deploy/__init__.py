"""How hefl runs: the one-command demo, the example hospitals' CSVs and study specs, containers."""
