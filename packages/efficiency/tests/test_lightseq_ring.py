"""LightSeq's DistAttn: the schedules, exactness against single-process attention (simulated ranks in threads for
P = 3..5, real gloo processes for P = 2), overlap order, bytes, and the rematerialisation-aware checkpoint."""

import itertools
import queue
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lightseq import ring as ring_module
from paperzoo.efficiency.sequence.lightseq.blockwise import dense_attention
from paperzoo.efficiency.sequence.lightseq.comm import Comm
from paperzoo.efficiency.sequence.lightseq.head_parallel import head_parallel_attention, head_ranges
from paperzoo.efficiency.sequence.lightseq.launch import AttentionCase, full_inputs, spawn
from paperzoo.efficiency.sequence.lightseq.ring import (
    Block,
    SequenceParallelAttention,
    checkpoint_attention_layer,
    make_schedule,
    ring_attention,
    schedule_work,
    split_lengths,
)

HEADS = {"mha": (4, 4), "gqa": (4, 2), "mqa": (4, 1)}


# --- schedules ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize(("causal", "balanced"), [(False, True), (True, False), (True, True)])
def test_every_needed_block_is_scheduled_once_on_an_owner(world, causal, balanced):
    schedule = make_schedule(world, causal, balanced)
    done = Counter()
    for row in schedule:
        assert len(row) == world
        for worker, block in enumerate(row):
            if block is not None:
                assert worker in (block.q, block.kv)  # one side is always local
                done[(block.q, block.kv)] += 1
    needed = {(m, j) for m in range(world) for j in range(world) if not causal or j <= m}
    assert set(done) == needed and set(done.values()) == {1}


def test_balanced_schedule_by_hand_for_four_workers():
    # steps 0..2; at step 1 worker 0 would idle and computes block (3, 0) for worker 3; step 2: workers 0, 1 idle
    assert make_schedule(4, causal=True, balanced=True) == [
        [Block(0, 0), Block(1, 1), Block(2, 2), Block(3, 3)],
        [Block(3, 0), Block(1, 0), Block(2, 1), Block(3, 2)],
        [None, None, Block(2, 0), Block(3, 1)],
    ]


@pytest.mark.parametrize("world", [3, 4, 5, 8])
def test_balancing_cuts_the_busiest_workers_attention_work(world):
    lengths = [6] * world
    unbalanced = schedule_work(lengths, causal=True, balanced=False)
    balanced = schedule_work(lengths, causal=True, balanced=True)
    assert sum(balanced) == sum(unbalanced) == sum(p + 1 for p in range(6 * world))  # causal pairs, once each
    assert max(unbalanced) == unbalanced[-1] > max(balanced)
    assert len(make_schedule(world, True, True)) == world // 2 + 1  # steps, against P for the plain ring
    if world % 2:  # odd P: every worker computes the same number of blocks
        assert len({sum(row[w] is not None for row in make_schedule(world, True, True)) for w in range(world)}) == 1


def test_split_lengths():
    assert split_lengths(10, 4) == [3, 3, 2, 2]
    with pytest.raises(ConfigError, match="cannot split"):
        split_lengths(3, 4)


# --- simulated ranks: each rank a thread, messages through queues --------------------------------------------------
class Hub:
    def __init__(self):
        self.lock = threading.Lock()
        self.queues: dict[tuple, queue.Queue] = defaultdict(queue.Queue)
        self.log: list[tuple] = []

    def channel(self, key):
        with self.lock:
            return self.queues[key]


class _Done:
    def wait(self):
        return True


class _Recv:
    def __init__(self, channel, tensor):
        self.channel, self.tensor = channel, tensor

    def wait(self):
        self.tensor.copy_(self.channel.get(timeout=20))
        return True


class ThreadComm(Comm):
    """`Comm` for P simulated ranks in one process (the counting is the base class's)."""

    def __init__(self, rank, world_size, hub):
        self.group, self.distributed, self.rank, self.world_size, self.hub = None, True, rank, world_size, hub
        self.sent, self.received, self.messages, self.work = Counter(), Counter(), Counter(), Counter()

    def isend(self, tensor, dst, tag, kind):
        assert dst != self.rank
        self.sent[kind] += tensor.numel() * tensor.element_size()
        self.hub.log.append((threading.current_thread().name, "isend", tag))
        self.hub.channel((self.rank, dst, tag)).put(tensor.detach().clone())
        return _Done()

    def irecv(self, tensor, src, tag, kind):
        assert src != self.rank
        self.received[kind] += tensor.numel() * tensor.element_size()
        self.hub.log.append((threading.current_thread().name, "irecv", tag))
        return _Recv(self.hub.channel((src, self.rank, tag)), tensor)


def run_ranks(case: AttentionCase, hub=None):
    """Run `case` on len(case.lengths) simulated ranks; returns the concatenated out, dq, dk, dv and the comms."""
    world = len(case.lengths)
    hub = Hub() if hub is None else hub
    q, k, v, dout = full_inputs(case)
    starts = [sum(case.lengths[:r]) for r in range(world)]

    def rank_fn(rank):
        rows = slice(starts[rank], starts[rank] + case.lengths[rank])
        ql, kl, vl = (t[:, :, rows].clone().requires_grad_(True) for t in (q, k, v))
        comm = ThreadComm(rank, world, hub)
        attention = ring_attention if case.scheme == "ring" else head_parallel_attention
        kwargs = {"balanced": case.balanced} if case.scheme == "ring" else {}
        out = attention(ql, kl, vl, causal=case.causal, lengths=list(case.lengths), comm=comm, **kwargs)
        forward_sent = Counter(comm.sent)
        (out * dout[:, :, rows]).sum().backward()
        return out.detach(), ql.grad, kl.grad, vl.grad, comm, forward_sent

    with ThreadPoolExecutor(world) as pool:
        results = list(pool.map(rank_fn, range(world)))
    cat = [torch.cat([r[i] for r in results], dim=2) for i in range(4)]
    return cat, [r[4] for r in results], [r[5] for r in results]


def reference(case: AttentionCase):
    q, k, v, dout = full_inputs(case)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = dense_attention(q, k, v, causal=case.causal)
    (out * dout).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def assert_exact(case, got, atol=1e-12):
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, reference(case), strict=True):
        assert torch.allclose(a, b, atol=atol), f"{case.name} {name}: max error {(a - b).abs().max():.2e}"


SIMULATED = [
    AttentionCase(f"{heads}-p{len(lengths)}-{mode}", heads=h, kv_heads=hk, lengths=lengths, causal=c, balanced=b)
    for (heads, (h, hk)), lengths, (mode, c, b) in itertools.product(
        HEADS.items(),
        [(3, 4, 2), (4, 4, 4, 4), (3, 2, 5, 1, 4)],
        [("full", False, True), ("causal", True, False), ("balanced", True, True)],
    )
]


@pytest.mark.parametrize("case", SIMULATED, ids=lambda c: c.name)
def test_ring_equals_single_process_attention_on_simulated_ranks(case):
    assert_exact(case, run_ranks(case)[0])


def test_ring_sends_only_key_value_heads_unless_it_balances():
    # non-causal MQA on 4 ranks of 4 tokens, float64: every rank forwards 3 K/V chunks of 1 head x 4 x 8 numbers
    case = AttentionCase("mqa", heads=4, kv_heads=1, lengths=(4, 4, 4, 4), causal=False)
    _, comms, forward = run_ranks(case)
    chunk = 1 * 4 * 8 * 8  # heads x tokens x head_dim x bytes
    for sent in forward:
        assert sent == {"kv": 3 * 2 * chunk}
    for comm in comms:  # backward: K/V once more and the K/V gradients of the 3 blocks back to their owners
        assert comm.sent["kv"] == 2 * 3 * 2 * chunk and comm.sent["dkv"] == 3 * 2 * chunk
    # the balanced causal schedule moves query chunks (4 heads) to helpers and partial results back
    _, comms, forward = run_ranks(AttentionCase("b", heads=4, kv_heads=1, lengths=(4,) * 4, causal=True))
    assert forward[3]["q"] == 4 * 4 * 8 * 8 and forward[0]["partial"] == 4 * 4 * 8 * 8 + 4 * 4 * 8
    assert sum(c.work["blocks"] for c in comms) == 10 and max(c.work["blocks"] for c in comms) == 3


def test_next_transfer_is_posted_before_the_current_block_is_computed(monkeypatch):
    hub = Hub()
    original = ring_module.attention_block

    def logged(*args, **kwargs):
        hub.log.append((threading.current_thread().name, "compute", None))
        return original(*args, **kwargs)

    monkeypatch.setattr(ring_module, "attention_block", logged)
    run_ranks(AttentionCase("overlap", heads=2, kv_heads=2, lengths=(3, 3, 3), causal=False), hub)
    per_thread = defaultdict(list)
    for thread, event, tag in hub.log:
        per_thread[thread].append((event, tag))
    assert len(per_thread) == 3
    for events in per_thread.values():
        computes = [i for i, (event, _) in enumerate(events) if event == "compute"]
        assert len(computes) == 3  # forward blocks of steps 0, 1, 2
        for step in (1, 2):
            posted = events.index(("irecv", ring_module._tag(step, ring_module._K)))
            # the receive for step s is posted after block s - 2 and before block s - 1 is computed: one step ahead
            assert (computes[step - 2] if step >= 2 else -1) < posted < computes[step - 1]


def test_single_rank_without_torch_distributed():
    case = AttentionCase("one", heads=4, kv_heads=2, lengths=(9,), causal=True)
    q, k, v, _ = full_inputs(case)
    assert torch.allclose(ring_attention(q, k, v, causal=True), dense_attention(q, k, v, True), atol=1e-12)
    assert torch.allclose(head_parallel_attention(q, k, v, causal=True), dense_attention(q, k, v, True), atol=1e-12)


@pytest.mark.parametrize("heads", HEADS)
def test_head_parallel_equals_single_process_attention_on_simulated_ranks(heads):
    h, hk = HEADS[heads]
    for causal in (False, True):
        case = AttentionCase(f"hp-{heads}", scheme="head_parallel", heads=h, kv_heads=hk, lengths=(3, 5), causal=causal)
        assert_exact(case, run_ranks(case)[0])
    case = AttentionCase("hp4", scheme="head_parallel", heads=h, kv_heads=hk, lengths=(2, 3, 2, 3), causal=True)
    assert_exact(case, run_ranks(case)[0])


def test_head_ranges_send_each_rank_the_kv_heads_its_query_heads_read():
    assert head_ranges(8, 2, 4) == (
        [range(0, 2), range(2, 4), range(4, 6), range(6, 8)],
        [range(0, 1)] * 2 + [range(1, 2)] * 2,
    )
    assert head_ranges(8, 8, 2)[1] == [range(0, 4), range(4, 8)]
    with pytest.raises(ConfigError, match="divide over"):
        head_ranges(6, 3, 4)


def test_remat_aware_checkpoint_skips_the_attention_forward_in_backward():
    torch.manual_seed(0)
    layer = SequenceParallelAttention(16, n_heads=4, n_kv_heads=2).double()
    x0 = torch.randn(2, 7, 16, dtype=torch.float64)
    grads, counts = {}, {}
    for way in ("none", "plain", "remat"):
        layer.zero_grad()
        x = x0.clone().requires_grad_(True)
        comm = Comm()
        y = (
            layer(x, comm=comm)
            if way == "none"
            else checkpoint_attention_layer(layer, x, comm=comm, remat_aware=way == "remat")
        )
        y.pow(2).sum().backward()
        grads[way] = [x.grad, *(p.grad.clone() for p in layer.parameters())]
        counts[way] = (
            comm.work["attention_forward"],
            comm.work["attention_forward_cached"],
            comm.work["attention_backward"],
        )
    assert counts == {"none": (1, 0, 1), "plain": (2, 0, 1), "remat": (1, 1, 1)}
    for way in ("plain", "remat"):
        for a, b in zip(grads[way], grads["none"], strict=True):
            assert torch.allclose(a, b, atol=1e-12)


def test_bad_arguments_raise_config_errors():
    q = torch.zeros(1, 4, 3, 8)
    k = torch.zeros(1, 3, 3, 8)
    with pytest.raises(ConfigError, match="multiple"):
        ring_attention(q, k, k)
    with pytest.raises(ConfigError, match="lengths"):
        ring_attention(q, q, q, lengths=[4])


# --- real processes: 2 gloo ranks on CPU ----------------------------------------------------------------------------
GLOO_CASES = [
    AttentionCase(
        f"{scheme}-{heads}-{'causal' if c else 'full'}", scheme=scheme, heads=h, kv_heads=hk, lengths=(5, 4), causal=c
    )
    for scheme in ("ring", "head_parallel")
    for heads, (h, hk) in HEADS.items()
    for c in (False, True)
]


@pytest.fixture(scope="module")
def gloo_results():
    checkpoint = {"dim": 16, "heads": 4, "kv_heads": 1, "lengths": (5, 4), "causal": True}
    calls = [
        ("paperzoo.efficiency.sequence.lightseq.launch:attention_case", ([asdict(c) for c in GLOO_CASES],)),
        ("paperzoo.efficiency.sequence.lightseq.launch:checkpoint_case", (checkpoint,)),
    ]
    return spawn("paperzoo.efficiency.sequence.lightseq.launch:several", 2, calls)


def test_two_gloo_processes_forward_and_gradients_equal_single_process(gloo_results):
    for i, case in enumerate(GLOO_CASES):
        got = [torch.cat([rank[0][i][name] for rank in gloo_results], dim=2) for name in ("out", "dq", "dk", "dv")]
        assert_exact(case, got)


def test_two_gloo_processes_bytes(gloo_results):
    by_name = {case.name: i for i, case in enumerate(GLOO_CASES)}
    chunk0 = 5 * 8 * 8  # rank 0's tokens x head_dim x float64 bytes, per head
    for heads, (h, hk) in HEADS.items():
        ring = gloo_results[0][0][by_name[f"ring-{heads}-full"]]
        assert ring["forward_sent"] == {"kv": 2 * hk * chunk0}
        hp = gloo_results[0][0][by_name[f"head_parallel-{heads}-full"]]
        # rank 0 sends half its query heads, the kv heads rank 1 reads, and rank 1's share of the output rows
        kv_to_1 = max(hk // 2, 1)
        assert hp["forward_sent"] == {
            "q": h // 2 * chunk0,
            "k": kv_to_1 * chunk0,
            "v": kv_to_1 * chunk0,
            "out": h // 2 * 4 * 64,
        }


def test_two_gloo_processes_remat_checkpoint(gloo_results):
    for rank in gloo_results:
        ways = rank[1]
        assert ways["plain"]["work"]["attention_forward"] == 2 and ways["remat"]["work"]["attention_forward"] == 1
        assert ways["remat"]["work"]["attention_forward_cached"] == 1
        for way in ("plain", "remat"):
            assert torch.allclose(ways[way]["dx"], ways["none"]["dx"], atol=1e-12)
            for a, b in zip(ways[way]["dparams"], ways["none"]["dparams"], strict=True):
                assert torch.allclose(a, b, atol=1e-12)
    # the plain checkpoint repeats the forward's transfers in backward; the remat-aware one does not
    rank0 = gloo_results[0][1]
    assert rank0["plain"]["total_bytes"] - rank0["remat"]["total_bytes"] == rank0["none"]["forward_bytes"] > 0
    assert rank0["remat"]["total_bytes"] == rank0["none"]["total_bytes"]
    # parameter gradients differ per rank (own chunk); summed over ranks they are the full-sequence gradients
    assert not torch.allclose(gloo_results[0][1]["none"]["dparams"][0], gloo_results[1][1]["none"]["dparams"][0])
