import pytest
import torch

from paperzoo.core.data.sampler import ResumableSampler, ShardSampler
from paperzoo.core.errors import ConfigError


def take(sampler: ResumableSampler, n: int) -> list[int]:
    out = []
    while len(out) < n:
        for index in sampler:
            out.append(index)
            if len(out) == n:
                break
    return out


def test_each_epoch_is_a_seeded_permutation():
    sampler = ResumableSampler(10, seed=3)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert epoch0 == torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert list(ResumableSampler(10, shuffle=False)) == list(range(10))


def test_ranks_partition_the_global_order():
    size, world = 11, 2
    shares = [ResumableSampler(size, seed=1, num_replicas=world, rank=r) for r in range(world)]
    one = ResumableSampler(size, seed=1, num_replicas=1, rank=0).epoch_indices(0).tolist()
    got = [s.epoch_indices(0).tolist() for s in shares]
    assert len(got[0]) == len(got[1]) == 5
    # global batch k of one process at batch 2b is the union of the ranks' batch k at batch b
    for b in (1, 2):
        for k in range(5 // b):
            merged = sorted(got[0][k * b : (k + 1) * b] + got[1][k * b : (k + 1) * b])
            assert merged == sorted(one[2 * k * b : 2 * (k + 1) * b])


@pytest.mark.parametrize("stop_at", [3, 10, 17])  # inside epoch 0, at the start of epoch 1, inside epoch 1
def test_state_dict_resumes_exactly_in_any_epoch(stop_at):
    uninterrupted = take(ResumableSampler(10, seed=5), 25)
    first = ResumableSampler(10, seed=5)
    head = take(first, stop_at)
    state = first.state_dict()
    resumed = ResumableSampler(10, seed=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # Lightning calls set_epoch on restart: it must not rewind
    assert head + take(resumed, 25 - stop_at) == uninterrupted


def test_set_epoch_to_a_new_epoch_starts_it_from_the_beginning():
    sampler = ResumableSampler(6, seed=0)
    take(sampler, 2)
    sampler.set_epoch(4)
    assert list(sampler) == sampler.epoch_indices(4).tolist()


def test_bad_rank_is_a_config_error():
    with pytest.raises(ConfigError, match="rank 2 is outside"):
        ResumableSampler(10, num_replicas=2, rank=2)


def test_shard_sampler_restarts_and_partitions():
    shards = [ShardSampler(7, num_replicas=2, rank=r) for r in range(2)]
    assert [list(s) for s in shards] == [[0, 2, 4], [1, 3, 5]]
    single = ShardSampler(5, num_replicas=1, rank=0)
    iterator = iter(single)
    next(iterator)  # an interrupted pass (Lightning's sanity check) must not shift the next one
    assert list(single) == [0, 1, 2, 3, 4]
