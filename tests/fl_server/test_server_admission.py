import pytest

from fl_server.admission import RateLimiter, SlotTable
from fl_server.errors import RateLimitedError, SlotsFullError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_slots_admit_up_to_capacity_and_say_when_one_frees() -> None:
    clock = Clock()
    slots = SlotTable(2, ttl=60, clock=clock)
    assert slots.acquire("a") == 1060
    clock.now += 10
    slots.acquire("b")
    with pytest.raises(SlotsFullError) as info:
        slots.acquire("c")
    assert info.value.retry_after == 50
    assert info.value.headers == {"Retry-After": "50"}
    assert slots.in_use() == 2


def test_acquiring_again_renews_the_same_lease() -> None:
    clock = Clock()
    slots = SlotTable(1, ttl=60, clock=clock)
    slots.acquire("a")
    clock.now += 30
    assert slots.acquire("a") == 1090
    assert slots.in_use() == 1


def test_released_and_expired_leases_free_their_slot() -> None:
    clock = Clock()
    slots = SlotTable(1, ttl=60, clock=clock)
    slots.acquire("a")
    assert slots.release("a")
    assert not slots.release("a")
    slots.acquire("b")
    clock.now += 60
    slots.acquire("c")
    assert slots.in_use() == 1


def test_rate_limiter_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimitedError) as info:
        limiter.take("a")
    assert info.value.retry_after == 1
    limiter.take("b")  # buckets are per client
    clock.now += 1.0
    limiter.take("a")
    with pytest.raises(RateLimitedError):
        limiter.take("a")


def test_rate_zero_means_no_limit() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    for _ in range(100):
        limiter.take("a")
