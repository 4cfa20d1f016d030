"""hefl aggregation server: holds the model only as ciphertexts and applies updates."""
