"""Named, validated CKKS parameter sets for an add-only server."""

from __future__ import annotations

import math
from dataclasses import dataclass

from crypto._errors import ProfileError

__all__ = ["DEFAULT_PROFILE", "PROFILES", "CkksProfile", "get_profile"]

# The canary tolerance is the stated error bound after this many additions: more than any
# study adds (CkksProfile.canary_tolerance).
_CANARY_ADDITIONS = 10**8

# Largest total coefficient modulus (bits) per polynomial degree at 128-bit
# classical security (HomomorphicEncryption.org standard, as enforced by SEAL).
_MAX_MODULUS_BITS = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CkksProfile:
    """A CKKS parameter set and what it guarantees.

    Updates are encrypted at the lowest modulus level, where only the first
    prime of ``coeff_mod_bit_sizes`` remains; the other primes exist because
    TenSEAL's key generation needs a special prime. The model is kept at
    ``2**model_scale_bits = 2**(update_scale_bits + weight_bits)``: the server
    weights an update by multiplying it with the integer
    ``round(weight * 2**weight_bits)`` and relabelling its scale, which uses no
    modulus level (see ``ServerCipher.add_weighted``).

    Parameters
    ----------
    name
        Stable name used in configuration (``KEYAUTH_PROFILE`` and friends).
    poly_modulus_degree
        Ring dimension N. A block holds N real values (two per slot).
    coeff_mod_bit_sizes
        Bit sizes of the coefficient-modulus primes.
    update_scale_bits
        log2 of the scale a client encrypts updates with.
    weight_bits
        Resolution of staleness weights: weights are multiples of 2**-weight_bits.
    noise_coefficient
        Measured: max absolute error over a block after n additions is about
        ``noise_coefficient * sqrt(n) * 2**-update_scale_bits``
        (see ``benchmarks/profile_precision.py``).
    """

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    update_scale_bits: int
    weight_bits: int
    noise_coefficient: float
    description: str = ""

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in _MAX_MODULUS_BITS:
            raise ProfileError(
                f"profile {self.name!r}: poly_modulus_degree must be one of "
                f"{sorted(_MAX_MODULUS_BITS)}, got {n}"
            )
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 2:
            raise ProfileError(
                f"profile {self.name!r}: needs at least two primes (data prime + special prime)"
            )
        if any(not 10 <= b <= 60 for b in bits):
            raise ProfileError(f"profile {self.name!r}: every prime must have 10..60 bits: {bits}")
        if sum(bits) > _MAX_MODULUS_BITS[n]:
            raise ProfileError(
                f"profile {self.name!r}: {sum(bits)} modulus bits exceed the 128-bit-security "
                f"limit of {_MAX_MODULUS_BITS[n]} for N={n}"
            )
        if not 0 <= self.weight_bits <= 20:
            raise ProfileError(f"profile {self.name!r}: weight_bits must be 0..20")
        if self.update_scale_bits < 10:
            raise ProfileError(f"profile {self.name!r}: update_scale_bits must be at least 10")
        if self.model_scale_bits > bits[0] - 3:
            raise ProfileError(
                f"profile {self.name!r}: model scale 2^{self.model_scale_bits} leaves no room "
                f"below the {bits[0]}-bit data prime"
            )
        if self.noise_coefficient <= 0:
            raise ProfileError(f"profile {self.name!r}: noise_coefficient must be positive")

    @property
    def block_size(self) -> int:
        """Real values per ciphertext block (two per slot, packed as a complex number)."""
        return self.poly_modulus_degree

    @property
    def model_scale_bits(self) -> int:
        return self.update_scale_bits + self.weight_bits

    @property
    def update_scale(self) -> float:
        return float(2**self.update_scale_bits)

    @property
    def model_scale(self) -> float:
        return float(2**self.model_scale_bits)

    @property
    def max_magnitude(self) -> float:
        """Largest absolute value the model (and any update) holds safely.

        A CKKS coefficient must stay below half the data prime; a vector of equal
        values puts all of ``value * scale`` in one coefficient, so the bound is
        ``2**(data_prime_bits - model_scale_bits - 2)`` (one bit of sign, one of margin).
        """
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.model_scale_bits - 2))

    @property
    def canary_tolerance(self) -> float:
        """How far from 0 a canary or padding slot of an honest model may decrypt.

        The stated error bound after 10^8 additions (``error_bound``): far above the
        noise of any honest history, far below what a corrupted block decrypts to.
        Measured at ``n4096-s40`` (one block, updates N(0, 0.01) with zero canaries,
        weights uniform in [0.05, 1]; two key pairs): the largest canary is 3.6e-9 and
        6.2e-9 after 1,000 additions, 2.3e-8 after 10,000, 5.0e-8 after 100,000 (it
        grows as sqrt(n)). The tolerance, 1.8e-5, is 3,000 times the first, 360 times the
        last and 11 times its sqrt(n) extrapolation to 10^8 additions. A block with one
        flipped bit, or encrypted under another key, decrypts to about 5e4 in every
        slot. At ``test-n2048``: 1.7e-4 after 1,000 additions, tolerance 1.19, garbage
        about 3e4. At ``n2048-s26`` (the same measurement): 3.3e-5 and 5.7e-5 after 1,000
        additions, 1.1e-4 and 9.5e-5 after 10,000; the tolerance, 0.30, is 2,800 times the
        last and 27 times its sqrt(n) extrapolation to 10^8; a flipped bit or another key
        decrypts to a median of about 400 per slot (beyond ``max_magnitude`` too).
        """
        return self.error_bound(_CANARY_ADDITIONS)

    @property
    def max_block_bytes(self) -> int:
        """Upper bound on one serialized ciphertext block (two full polynomials + header)."""
        return 2 * self.poly_modulus_degree * 8 + 4096

    def quantize_weight(self, weight: float) -> int:
        """The integer the server multiplies an update by for a staleness ``weight``.

        The applied weight is exactly ``quantize_weight(w) / 2**weight_bits``.
        """
        if not math.isfinite(weight) or weight < 0 or weight > 1:
            raise ValueError(f"staleness weight must be in [0, 1], got {weight!r}")
        return round(weight * (1 << self.weight_bits))

    def applied_weight(self, weight: float) -> float:
        """The weight that is really applied once ``weight`` is quantized."""
        return self.quantize_weight(weight) / (1 << self.weight_bits)

    def error_bound(self, n_additions: int) -> float:
        """Stated max absolute error of a decrypted value after ``n_additions`` updates.

        Twice the measured noise growth, plus the rounding of the model scale.
        """
        n = max(1, n_additions)
        return 2.0 * self.noise_coefficient * math.sqrt(n) * 2.0**-self.update_scale_bits


PROFILES: dict[str, CkksProfile] = {
    p.name: p
    for p in (
        CkksProfile(
            name="n4096-s40",
            poly_modulus_degree=4096,
            coeff_mod_bit_sizes=(60, 49),
            update_scale_bits=40,
            weight_bits=10,
            noise_coefficient=1.0e3,
            description="default: 8 bytes/param updates, 1e-7 error after 10k additions, "
            "|values| <= 256, staleness weights in steps of 1/1024",
        ),
        CkksProfile(
            name="n4096-s44",
            poly_modulus_degree=4096,
            coeff_mod_bit_sizes=(60, 49),
            update_scale_bits=44,
            weight_bits=8,
            noise_coefficient=1.0e3,
            description="more precise (3e-9 after 10k additions), |values| <= 64, "
            "staleness weights in steps of 1/256",
        ),
        CkksProfile(
            name="n2048-s26",
            poly_modulus_degree=2048,
            coeff_mod_bit_sizes=(40, 14),
            update_scale_bits=26,
            weight_bits=8,
            noise_coefficient=1.0e3,
            description="compact: 6 bytes/param updates (a 40-bit data prime that SEAL's zstd "
            "packs) in blocks of 2,048 values, 5e-4 error after 10k additions, |values| <= 16, "
            "staleness weights in steps of 1/256",
        ),
        CkksProfile(
            name="test-n2048",
            poly_modulus_degree=2048,
            coeff_mod_bit_sizes=(40, 14),
            update_scale_bits=24,
            weight_bits=6,
            noise_coefficient=1.0e3,
            description="small and fast, for unit tests only: not for real models",
        ),
    )
}

DEFAULT_PROFILE: CkksProfile = PROFILES["n4096-s40"]


def get_profile(name: str) -> CkksProfile:
    """Look a profile up by name, with a clear error listing the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"unknown CKKS profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None
