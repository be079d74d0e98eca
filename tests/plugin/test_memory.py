"""host_memory: both heap modes apply on this (glibc) platform, and a bad mode is refused by name."""

import sys

import pytest
from pydantic import ValidationError

from plugin.config import TrainConfig
from plugin.memory import heap_thresholds, set_host_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
@pytest.mark.parametrize("mode", ["reuse", "flat"])  # flat last: the suite's later trainings expect it
def test_set_host_memory_applies_on_glibc(mode):
    assert set_host_memory(mode) is True


def test_reuse_keeps_bigger_blocks_in_the_heap_than_flat():
    assert heap_thresholds("reuse")[0] > heap_thresholds("flat")[0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="host_memory must be 'flat' or 'reuse'"):
        heap_thresholds("lots")  # type: ignore[arg-type]


def test_config_names_a_bad_host_memory(tmp_path):
    with pytest.raises(ValidationError, match="host_memory"):
        TrainConfig(model_name_or_path="m", train_data=str(tmp_path / "t.jsonl"), save_dir=str(tmp_path), host_memory="big")
