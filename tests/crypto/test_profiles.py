import math

import pytest

import crypto
from crypto import CkksProfile, ProfileError


def _profile(**overrides: object) -> CkksProfile:
    base: dict[str, object] = {
        "name": "x",
        "poly_modulus_degree": 4096,
        "coeff_mod_bit_sizes": (60, 49),
        "update_scale_bits": 40,
        "weight_bits": 10,
        "noise_coefficient": 1000.0,
    }
    base.update(overrides)
    return CkksProfile(**base)  # type: ignore[arg-type]


def test_default_profile_states_its_guarantees() -> None:
    p = crypto.DEFAULT_PROFILE
    assert p.name == "n4096-s40"
    assert p.block_size == 4096
    assert p.model_scale_bits == 50
    assert p.max_magnitude == 256.0
    # 10,000 additions must stay within 1e-6: the stated bound says so too
    assert p.error_bound(10_000) < 1e-6


def test_the_compact_profile_states_its_guarantees() -> None:
    p = crypto.get_profile("n2048-s26")
    assert p.block_size == 2048
    # 54 bits is the HomomorphicEncryption.org limit for N=2048 at 128-bit security
    assert sum(p.coeff_mod_bit_sizes) == 54
    assert p.model_scale_bits == 34
    assert p.max_magnitude == 16.0
    assert p.applied_weight(1 / 3) == round(256 / 3) / 256
    assert p.quantize_weight(1 / 1024) == 0
    # 10,000 additions within 3e-3 (measured 5.2e-4: docs/design.md "Profiles")
    assert p.error_bound(10_000) < 3e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": (60,)}, "two primes"),
        ({"coeff_mod_bit_sizes": (61, 40)}, "10..60"),
        ({"coeff_mod_bit_sizes": (60, 60)}, "128-bit-security"),
        ({"weight_bits": 21}, "weight_bits"),
        ({"update_scale_bits": 55}, "no room"),
        ({"update_scale_bits": 5}, "at least 10"),
        ({"noise_coefficient": 0.0}, "positive"),
    ],
)
def test_invalid_profiles_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        _profile(**overrides)


def test_unknown_profile_name_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="n4096-s40"):
        crypto.get_profile("nope")


def test_weight_quantization_is_exact_and_bounded() -> None:
    p = crypto.DEFAULT_PROFILE
    assert p.quantize_weight(1.0) == 1024
    assert p.quantize_weight(0.5) == 512
    assert p.applied_weight(1 / 3) == round(1024 / 3) / 1024
    assert p.quantize_weight(1e-5) == 0
    for bad in (-0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="staleness weight"):
            p.quantize_weight(bad)


def test_error_bound_grows_like_the_square_root() -> None:
    p = crypto.DEFAULT_PROFILE
    assert p.error_bound(400) == pytest.approx(2 * p.error_bound(100))
    assert p.error_bound(0) == p.error_bound(1)


@pytest.mark.parametrize("profile", list(crypto.PROFILES.values()), ids=lambda p: p.name)
def test_the_canary_tolerance_sits_between_honest_noise_and_garbage(
    profile: crypto.CkksProfile,
) -> None:
    # honest: the stated bound after a million additions; garbage: about 1e4 and more
    assert profile.error_bound(10**6) < profile.canary_tolerance < 10
    assert profile.canary_tolerance < profile.max_magnitude
