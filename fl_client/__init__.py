"""hefl hospital client: pull, decrypt, train, compress, encrypt, push."""
