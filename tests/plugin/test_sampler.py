"""Length-grouped batches in random order: a permutation, similar lengths per batch, no length drift."""

import random

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from plugin.sampler import ShuffledLengthGroupedSampler, shuffled_length_groups

BATCH = 8


def lengths(n: int = 2000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(4, 64) for _ in range(n)]


def batches(order: list[int]) -> list[list[int]]:
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


def test_every_index_once_longest_batch_first():
    lens = lengths()
    order = shuffled_length_groups(lens, BATCH, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(len(lens)))
    assert max(lens) in [lens[i] for i in order[:BATCH]]  # an out-of-memory error still shows at step 1


def test_same_batches_as_length_grouping_so_padding_stays_low():
    lens = lengths()
    grouped = get_length_grouped_indices(lens, BATCH, generator=torch.Generator().manual_seed(3))
    shuffled = shuffled_length_groups(lens, BATCH, torch.Generator().manual_seed(3))
    assert sorted(map(sorted, batches(shuffled))) == sorted(map(sorted, batches(grouped)))

    def padded(order: list[int]) -> int:
        return sum(len(b) * max(lens[i] for i in b) for b in batches(order))

    random_order = torch.randperm(len(lens), generator=torch.Generator().manual_seed(3)).tolist()
    assert padded(shuffled) < 0.7 * padded(random_order)


def test_batch_order_has_no_length_drift():
    """HF's grouping walks long -> short inside each 50-batch megabatch; ours does not."""
    lens = lengths()

    def descending_steps(order: list[int]) -> float:
        maxima = [max(lens[i] for i in b) for b in batches(order)]
        return sum(a >= b for a, b in zip(maxima, maxima[1:], strict=False)) / (len(maxima) - 1)

    g = torch.Generator().manual_seed(5)
    assert descending_steps(get_length_grouped_indices(lens, BATCH, generator=g)) > 0.95
    assert 0.35 < descending_steps(shuffled_length_groups(lens, BATCH, torch.Generator().manual_seed(5))) < 0.65


def test_sampler_is_seeded_and_reshuffles_each_pass():
    lens = lengths(400)
    a = ShuffledLengthGroupedSampler(BATCH, lens, torch.Generator().manual_seed(7))
    b = ShuffledLengthGroupedSampler(BATCH, lens, torch.Generator().manual_seed(7))
    first = list(a)
    assert len(a) == len(lens) and first == list(b)
    assert list(a) != first


def test_one_batch_or_less():
    assert sorted(shuffled_length_groups([3, 9, 1], BATCH)) == [0, 1, 2]
