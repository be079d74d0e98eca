"""The heap-growth limit applies on this (glibc) platform and keeps big frees returning to the OS."""

import sys

import pytest

from plugin.memory import limit_heap_growth


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
def test_limit_heap_growth_applies_on_glibc():
    assert limit_heap_growth() is True
