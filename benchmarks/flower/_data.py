"""The benchmark's hospitals, as data factories both hefl's and Flower's clients load.

``heart-disease`` is fl_client's bundled Fed-Heart-Disease (four hospitals). The
held-out-style case ``big-slow`` is built from the same rows: Cleveland and Hungary
merged into one big hospital (their train and test splits concatenated, standardized
with the merged training statistics), next to Switzerland and VA Long Beach as they are.
The big one then holds 371 of the 486 training rows (76%), and the benchmark makes it
the slow one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fl_client.data import ClientData, dataset_sites, load_client_data, site_arrays, to_client_data
from fl_client.data import pool_sites as _pool

HEART = "heart-disease"
BIG = "cleveland-hungary"  # a hospital name keyauth accepts
BIG_SLOW = "benchmarks.flower._data:big_slow_hospitals"
_MERGED = ("cleveland", "hungary")


def big_slow_hospitals(site: str | None = None) -> ClientData:
    """A data factory (``--data benchmarks.flower._data:big_slow_hospitals --site S``):
    ``cleveland-hungary``, ``switzerland`` or ``va-long-beach``."""
    if site == BIG:
        merged = _pool([site_arrays(HEART, s) for s in _MERGED])
        return to_client_data(replace(merged, site=BIG))
    if site in _MERGED:
        raise ValueError(f"{site} is part of {BIG} in this case")
    return load_client_data(HEART, site)


def sites_of(data: str) -> list[str]:
    """The hospitals of a benchmark dataset, the slow one last."""
    if data == HEART:
        return dataset_sites(HEART)
    if data == BIG_SLOW:
        return ["switzerland", "va-long-beach", BIG]
    raise ValueError(f"unknown benchmark dataset {data!r}")


def load_site(data: str, site: str) -> ClientData:
    """One hospital's rows, exactly as hefl's client loads them for ``--data data``."""
    if data == HEART:
        return load_client_data(HEART, site)
    if data == BIG_SLOW:
        return big_slow_hospitals(site)
    raise ValueError(f"unknown benchmark dataset {data!r}")


def load_sites(data: str, sites: Sequence[str]) -> list[ClientData]:
    return [load_site(data, s) for s in sites]
