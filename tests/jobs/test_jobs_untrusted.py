"""Untrusted files and requests reach nothing they should not (Azurite backend): a VRT uploaded
under a .tif name is refused by its bytes before any driver that follows references sees it, and
a target CRS naming a file or a URL is refused at submission — with zero opens of the sentinel
file and zero connections to the loopback server."""
from __future__ import annotations

from untrusted import assert_nothing_reached, check_hostile_inputs


def test_hostile_vrt_and_crs_reach_nothing_on_azurite(host, store, tmp_path):
    assert_nothing_reached(check_hostile_inputs(host, store, tmp_path))
