"""hefl key authority: CKKS key material, client enrollment and access tokens."""
