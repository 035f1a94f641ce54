"""Paraformer forward, forward + backward and decoding: paperzoo against FunASR's `Paraformer`, same config dicts.

One config dict (widths, depths, vocabulary, CIF, GLM and CTC settings) builds both models: ours
(`paperzoo.speech.paraformer.model.Paraformer`, SAN-M encoder) and FunASR's (`funasr.models.paraformer.model.Paraformer`
with `SANMEncoder` (input_layer "pe"), `ParaformerSANMDecoder` and `CifPredictorV2`, predictor_bias 1 and ctc_weight 0
as in its paraformer configs; `--ctc-weight` gives both the auxiliary CTC loss). Our encoder and CIF predictor weights
are copied into FunASR's (`port_encoder_predictor`: the structures match, up to LayerNorm eps), so CIF fires the same
number of tokens in both and the decoders see the same lengths; the decoders cannot share weights (see the
differences below). The modes, on the same random batch (LFR-sized features [B, T, F], T spread from T/2 to T,
targets of `--tokens-per-frame` x T tokens, ids >= 3):

- `forward`: the training forward pass (train mode: dropout, GLM sampler with its no-grad first decoder pass, the
  quantity loss), autograd on, no backward;
- `forward+backward`: the same and `loss.backward()`;
- `decode`: inference (eval, no grad): encoder, CIF with the 0.45 tail, one decoder pass, argmax. Ours is
  `Paraformer.decode`; FunASR's is `Paraformer.inference(..., data_type="fbank")` (greedy, no tokenizer: its
  per-utterance Python post-processing is part of its decode, as ours is of ours);
- `encoder`, `cif`, `decoder`: the parts of decoding alone (eval, no grad), each model on its own upstream outputs:
  the encoder and the CIF predictor with the same weights, the decoder (different structures) on the fired embeddings.

Per mode the two run interleaved, in rotated order, over `--rounds` rounds after a warmup call (median reported), so
machine load hits them alike, with the same torch thread count. Throughput: utterances/s; ratio = ours / FunASR's
(> 1: ours faster). Peak memory: `paperzoo.core.profiling.peak_memory_bytes` of one call (CPU: the torch allocator's
peak live bytes replayed from the profiler; CUDA: the allocator's peak), ratio ours / FunASR's (< 1: ours smaller).

Structural differences between the two models at the same config dict (found reading FunASR 1.4.16's code):
- decoder: a FunASR `ParaformerSANMDecoder` layer has no self-attention: y = x + Drop(FSMN(LN(FFN(LN(x))))), where
  FFN(z) = W2 LN(Drop(ReLU(W1 z))) (a LayerNorm on the hidden units, no output bias) and FSMN is the memory block
  (depthwise conv, kernel 11, no bias, plus identity, padded positions zeroed), then y + Drop(CrossAttn(LN(y), memory))
  (fused K/V projection); after the `decoder_layers` layers one more layer LN -> FFN *without* a residual
  (`decoders3`), then LayerNorm and the output projection; no position encoding (order comes from the FSMN). Ours
  (H4's `ParaformerDecoder` over H3's shared `TransformerDecoder`) is a pre-norm transformer decoder: x + SelfAttn
  (bidirectional), + CrossAttn (separate K and V projections), + FFN (plain, with output bias), a sinusoidal position
  encoding added to the inputs, final LayerNorm and output projection. At one config dict the parameter counts are
  close but not equal (reported in the rows);
- LayerNorm eps: FunASR 1e-12, ours 1e-5 (torch's default);
- encoder: the same SAN-M computation (fused QKV, FSMN memory on V added after the output projection, pre-norm, no
  residual on the first layer, input x sqrt(D) + sinusoidal positions from 1, final LayerNorm); ours zeroes padded
  output frames, FunASR leaves them (masked everywhere downstream); ours uses `scaled_dot_product_attention`,
  FunASR an explicit softmax(QK^T / sqrt(d)) V;
- CIF: the same predictor (conv (l_order 1, r_order 1) -> ReLU -> Linear -> sigmoid); FunASR integrates with
  `cif_v1` (float64 prefix sums cast to float32, and a float32 prefix sum of alpha * h differenced at the fires),
  ours with a [B, N, T] overlap matrix and a batched matmul; in training FunASR may drop the last token when the scaled
  weights sum a rounding error below N (a zero embedding), ours always fires N; FunASR pads to round(sum alpha) rows;
  a frame of weight > 1 (training-time scaling only) fires once in FunASR's loop (the next token then gets a negative
  share of the following frame), as often as it holds the threshold in ours;
- padding: FunASR feeds CIF the encoder output with its padded frames unzeroed, so in a padded batch the last real
  frame's alpha sees a padded frame through the conv's right context and the inference tail (placed at index length,
  while FunASR appends its zero frame at the end of the batch) integrates a padded frame: a short utterance's result
  depends on the batch it is in. Ours zeroes padded encoder frames: batched and alone agree (tested);
- GLM sampler: FunASR replaces floor(lambda * d) embeddings in a Python loop over the batch (`randperm` per
  utterance) and takes the loss on every position; ours replaces ceil(lambda * d) (the paper), batched, and by default
  takes the loss on the positions not replaced (`glm_loss_on_all=False`, the paper and GLAT);
- losses: FunASR's label-smoothing KL (smoothing / (V - 1) on each wrong class) and its quantity loss
  sum |sum alpha - N|, both divided by the number of target tokens (length_normalized_loss, as in its configs); ours
  `F.cross_entropy(label_smoothing)` (smoothing / V on every class, mean over tokens) and |sum alpha - N| averaged
  over utterances, so the quantity loss weighs about N times more against the cross-entropy in ours;
- FunASR's forward also computes the first-pass accuracy and `force_gatherable` stats; its inference builds a
  `Hypothesis` per utterance.

    uv run --group peers python benchmarks/perf/paraformer_vs_funasr.py [--threads 1] [--frames 100 300] ...

FunASR is not in the peers group (`make peers` installs it with --no-deps plus the few modules its model code
imports). It prints a table and writes `benchmarks/perf/results/paraformer_vs_funasr.json` (`..._cuda.json` for
`--device cuda`), rendered by `paperzoo report`.
"""

import argparse
import json
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperzoo.core.io import atomic_write_text
from paperzoo.core.profiling import device_name, peak_memory_bytes, synchronize
from paperzoo.speech.paraformer.model import Paraformer

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("encoder", "cif", "decoder")
MODES = ("forward", "forward+backward", "decode", *PARTS)
OURS, THEIRS = "paperzoo Paraformer", "FunASR Paraformer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 300], help="longest utterance (LFR frames)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens-per-frame", type=float, default=0.5, help="target tokens per LFR frame")
    parser.add_argument("--vocab-size", type=int, default=500)
    parser.add_argument("--input-dim", type=int, default=560, help="feature width (80-d fbank x LFR 7)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--ffn-dim", type=int, default=1024)
    parser.add_argument("--encoder-layers", type=int, default=12)
    parser.add_argument("--decoder-layers", type=int, default=6)
    parser.add_argument("--ctc-weight", type=float, default=0.0, help="auxiliary CTC loss on the encoder (both)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions; the median is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


# --- the shared config dict and the two models built from it ----------------------------------------------------
def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The one config dict both models are built from (FunASR's paraformer defaults where the CLI does not say)."""
    return {
        "vocab_size": args.vocab_size,
        "input_dim": args.input_dim,
        "d_model": args.d_model,
        "num_heads": args.num_heads,
        "ffn_dim": args.ffn_dim,
        "encoder_layers": args.encoder_layers,
        "decoder_layers": args.decoder_layers,
        "kernel_size": 11,
        "dropout": 0.1,
        "cif_left_order": 1,
        "cif_right_order": 1,
        "tail_threshold": 0.45,
        "sampling_ratio": 0.75,
        "label_smoothing": 0.1,
        "ctc_weight": args.ctc_weight,
    }


def build_ours(config: dict[str, Any]) -> Paraformer:
    return Paraformer(
        vocab_size=config["vocab_size"],
        input_dim=config["input_dim"],
        encoder="sanm",
        d_model=config["d_model"],
        num_heads=config["num_heads"],
        encoder_layers=config["encoder_layers"],
        decoder_layers=config["decoder_layers"],
        ffn_dim=config["ffn_dim"],
        dropout=config["dropout"],
        encoder_kernel_size=config["kernel_size"],
        cif_left_order=config["cif_left_order"],
        cif_right_order=config["cif_right_order"],
        tail_threshold=config["tail_threshold"],
        sampling_ratio=config["sampling_ratio"],
        label_smoothing=config["label_smoothing"],
        ctc_weight=config["ctc_weight"],
    )


def funasr_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """FunASR's `Paraformer(**kwargs)` for `config`: its model_conf, encoder_conf, decoder_conf and predictor_conf as
    in FunASR's paraformer configs (SAN-M encoder with input_layer "pe", <eos> appended: predictor_bias 1)."""
    return {
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": config["d_model"],
            "attention_heads": config["num_heads"],
            "linear_units": config["ffn_dim"],
            "num_blocks": config["encoder_layers"],
            "dropout_rate": config["dropout"],
            "positional_dropout_rate": config["dropout"],
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "normalize_before": True,
            "kernel_size": config["kernel_size"],
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": config["num_heads"],
            "linear_units": config["ffn_dim"],
            "num_blocks": config["decoder_layers"],
            "dropout_rate": config["dropout"],
            "positional_dropout_rate": config["dropout"],
            "self_attention_dropout_rate": 0.0,
            "src_attention_dropout_rate": 0.0,
            "att_layer_num": config["decoder_layers"],
            "kernel_size": config["kernel_size"],
            "sanm_shfit": 0,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {
            "idim": config["d_model"],
            "threshold": 1.0,
            "l_order": config["cif_left_order"],
            "r_order": config["cif_right_order"],
            "tail_threshold": config["tail_threshold"],
        },
        "input_size": config["input_dim"],
        "vocab_size": config["vocab_size"],
        "ctc_weight": config["ctc_weight"],
        "lsm_weight": config["label_smoothing"],
        "length_normalized_loss": True,
        "predictor_weight": 1.0,
        "predictor_bias": 1,
        "sampling_ratio": config["sampling_ratio"],
        "sos": 1,  # paperzoo.speech.data.tokenizer.SOS_EOS_ID
        "eos": 1,
        "ignore_id": -1,  # IGNORE_ID
        "blank_id": 0,
    }


def build_funasr(config: dict[str, Any]) -> nn.Module:
    """FunASR's Paraformer from `config` (imports its registered encoder, decoder and predictor classes first)."""
    import funasr.models.paraformer.cif_predictor  # noqa: F401  (registers CifPredictorV2)
    import funasr.models.paraformer.decoder  # noqa: F401  (registers ParaformerSANMDecoder)
    import funasr.models.sanm.encoder  # noqa: F401  (registers SANMEncoder)
    from funasr.models.paraformer.model import Paraformer as FunASRParaformer

    return FunASRParaformer(**funasr_kwargs(config))


# Our parameter names -> FunASR's, for the encoder and the CIF predictor (the decoders differ in structure).
RENAMES = [
    (r"^encoder\.layers\.0\.", "encoder.encoders0.0."),
    (r"^encoder\.layers\.(\d+)\.", lambda m: f"encoder.encoders.{int(m.group(1)) - 1}."),
    (r"\.attn_norm\.", ".norm1."),
    (r"\.ffn_norm\.", ".norm2."),
    (r"\.attn\.qkv\.", ".self_attn.linear_q_k_v."),
    (r"\.attn\.out\.", ".self_attn.linear_out."),
    (r"\.attn\.fsmn\.", ".self_attn.fsmn_block."),
    (r"\.ffn\.w1\.", ".feed_forward.w_1."),
    (r"\.ffn\.w2\.", ".feed_forward.w_2."),
    (r"^encoder\.norm\.", "encoder.after_norm."),
    (r"^predictor\.conv\.", "predictor.cif_conv1d."),
    (r"^predictor\.output\.", "predictor.cif_output."),
]


def funasr_name(name: str) -> str:
    """Our encoder/predictor parameter name -> FunASR's."""
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def port_encoder_predictor(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy our encoder and CIF predictor weights into FunASR's model (every one of its encoder/predictor tensors)."""
    state = {
        funasr_name(name): tensor
        for name, tensor in ours.state_dict().items()
        if name.startswith(("encoder.", "predictor."))
    }
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    left = [name for name in missing if name.startswith(("encoder.", "predictor."))]
    if unexpected or left:
        raise RuntimeError(f"encoder/predictor port mismatch: unexpected {unexpected}, not loaded {left}")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- inputs and the runs ----------------------------------------------------------------------------------------
def make_batch(config: dict[str, Any], batch: int, frames: int, tokens_per_frame: float, seed: int):
    """features [B, T, F], lengths [B] (from T/2 to T), tokens [B, N] (IGNORE_ID pad, ids >= 3), token lengths [B]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(frames, max(frames // 2, 1), batch).round().long()
    features = torch.randn(batch, frames, config["input_dim"], generator=g)
    features = features * (torch.arange(frames)[None, :, None] < lengths[:, None, None])
    token_lengths = (lengths.float() * tokens_per_frame).round().long().clamp(min=1)
    tokens = torch.randint(3, config["vocab_size"], (batch, int(token_lengths.max())), generator=g)
    tokens = tokens.masked_fill(torch.arange(tokens.shape[1])[None, :] >= token_lengths[:, None], -1)
    return features, lengths, tokens, token_lengths


def mode_runs(
    ours: nn.Module, theirs: nn.Module, batch: tuple[torch.Tensor, ...], mode: str
) -> dict[str, Callable[[], Any]]:
    """implementation -> a function that runs one `mode` call on `batch`."""
    features, lengths, tokens, token_lengths = batch

    def our_loss() -> torch.Tensor:
        return ours(features, lengths, tokens, token_lengths)["loss"]

    def their_loss() -> torch.Tensor:
        return theirs(features, lengths, tokens, token_lengths)[0].sum()

    def backward(model: nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            loss().backward()
            model.zero_grad(set_to_none=True)

        return run

    if mode == "forward":
        return {OURS: our_loss, THEIRS: their_loss}
    if mode == "forward+backward":
        return {OURS: backward(ours, our_loss), THEIRS: backward(theirs, their_loss)}
    if mode == "decode":
        keys = [f"utt{i}" for i in range(features.shape[0])]

        def our_decode() -> list[list[int]]:
            return ours.decode(features, lengths)

        def their_decode() -> list[list[int]]:
            with torch.no_grad():
                results, _ = theirs.inference(
                    features, lengths, key=keys, data_type="fbank", device=str(features.device)
                )
            return [result["token_int"] for result in results]

        return {OURS: our_decode, THEIRS: their_decode}
    if mode in PARTS:
        return part_runs(ours, theirs, features, lengths, mode)
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def part_runs(
    ours: nn.Module, theirs: nn.Module, features: torch.Tensor, lengths: torch.Tensor, part: str
) -> dict[str, Callable[[], Any]]:
    """One inference part alone (eval, no grad), each model on its own upstream outputs: "encoder" (same weights),
    "cif" (the predictor with the tail on the encoder output, same weights) or "decoder" (one pass on the fired
    embeddings; different structures)."""
    with torch.no_grad():
        memory, memory_lengths = ours.encoder(features, lengths)
        encoded, encoded_lengths = theirs.encode(features, lengths)
        fired = ours.predictor(memory, memory_lengths)
        embeddings, token_num, _, _ = theirs.calc_predictor(encoded, encoded_lengths)
    token_num = token_num.round().long()
    calls = {
        "encoder": (lambda: ours.encoder(features, lengths), lambda: theirs.encode(features, lengths)),
        "cif": (
            lambda: ours.predictor(memory, memory_lengths),
            lambda: theirs.calc_predictor(encoded, encoded_lengths),
        ),
        "decoder": (
            lambda: ours.decoder(fired.embeddings, fired.lengths, memory, memory_lengths),
            lambda: theirs.cal_decoder_with_predictor(encoded, encoded_lengths, embeddings, token_num),
        ),
    }[part]

    def no_grad(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return call()

        return run

    return {OURS: no_grad(calls[0]), THEIRS: no_grad(calls[1])}


@torch.no_grad()
def cif_counts(
    ours: nn.Module, theirs: nn.Module, batch: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens CIF fires at inference (with the tail) per utterance [B], ours and FunASR's (eval mode)."""
    features, lengths = batch[:2]
    memory, memory_lengths = ours.encoder(features, lengths)
    mine = ours.predictor(memory, memory_lengths).lengths
    encoded, encoded_lengths = theirs.encode(features, lengths)
    theirs_count = theirs.calc_predictor(encoded, encoded_lengths)[1].round().long()
    return mine.cpu(), theirs_count.cpu()


def seconds(run: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def measure(runs: dict[str, Callable[[], Any]], rounds: int, device: torch.device):
    """name -> (all round times, peak MiB of one call); rounds interleaved, order rotated each round."""
    for run in runs.values():  # warm up (allocator, first-call dispatch)
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(seconds(runs[name], device))
    return {name: (times[name], peak_memory_bytes(runs[name], device) / 2**20) for name in names}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = model_config(args)
    torch.manual_seed(args.seed)
    ours = build_ours(config).to(device)
    try:
        torch.manual_seed(args.seed)
        theirs = build_funasr(config)
    except ImportError as error:
        raise SystemExit(f"FunASR is not installed ({error}); see `make peers`") from error
    port_encoder_predictor(ours, theirs)
    theirs = theirs.to(device)
    params = {OURS: parameter_count(ours), THEIRS: parameter_count(theirs)}

    rows, spreads, counts_equal = [], [], []
    for frames in args.frames:
        batch = tuple(t.to(device) for t in make_batch(config, args.batch_size, frames, args.tokens_per_frame, 1))
        for mode in args.modes:
            for model in (ours, theirs):
                model.train(mode.startswith("forward"))
            runs = mode_runs(ours, theirs, batch, mode)
            if mode == "decode":
                counts_equal.append(bool(torch.equal(*cif_counts(ours, theirs, batch))))
            figures = measure(runs, args.rounds, device)
            median = {name: statistics.median(times) for name, (times, _) in figures.items()}
            spreads += [(max(t) - min(t)) / statistics.median(t) for t, _ in figures.values()]
            for name, (_, peak) in figures.items():
                reference = name == THEIRS
                rows.append(
                    {
                        "implementation": name,
                        "mode": mode,
                        "T": str(frames),
                        "params": f"{params[name]:,}",
                        "utt/s": f"{args.batch_size / median[name]:,.1f}",
                        "throughput ratio": "reference" if reference else f"{median[THEIRS] / median[name]:.2f}x",
                        "peak MiB": f"{peak:,.1f}",
                        "memory ratio": "reference" if reference else f"{peak / figures[THEIRS][1]:.2f}x",
                    }
                )
            print("  ".join(f"{k}={v}" for k, v in rows[-2].items()))
            print("  ".join(f"{k}={v}" for k, v in rows[-1].items()))
            if device.type == "cuda":
                torch.cuda.empty_cache()

    notes = (
        f"Same config dict: D={args.d_model}, H={args.num_heads}, FFN={args.ffn_dim}, {args.encoder_layers} SAN-M "
        f"encoder layers, {args.decoder_layers} decoder layers, V={args.vocab_size}, F={args.input_dim}, kernel 11, "
        f"dropout 0.1, GLM lambda 0.75, tail 0.45, CTC weight {args.ctc_weight}; B={args.batch_size} utterances of "
        f"T/2..T LFR frames, {args.tokens_per_frame} target tokens per frame; float32. Encoder and CIF predictor "
        "weights ported into FunASR's model (same structure); the decoders differ in structure (FunASR: an FSMN "
        "memory block instead of self-attention, an extra feed-forward-only layer; ours: self-attention + "
        "positions), hence the parameter counts. forward = training loss (GLM first pass included), "
        "forward+backward adds backward, decode = greedy inference with the CIF tail (FunASR: Paraformer.inference "
        "on fbank tensors); encoder, cif, decoder = those parts of decoding alone (eval, no grad; encoder and cif on "
        f"the same weights). Medians of {args.rounds} interleaved rounds after a warmup call; rounds of one "
        f"implementation spread by up to {max(spreads):.0%}. throughput ratio = FunASR's time / ours (>1: ours "
        "faster); memory ratio = our peak / FunASR's (<1: ours smaller), peak = "
        "paperzoo.core.profiling.peak_memory_bytes of one call. CIF emitted the same token counts in decode: "
        f"{'yes' if all(counts_equal) else 'no'}. Differences: module docstring."
    )
    record = {
        "title": "Paraformer vs FunASR Paraformer: forward, forward + backward, decode",
        "device": device_name(device),
        "command": "uv run --group peers python "
        + shlex.join(["benchmarks/perf/paraformer_vs_funasr.py", *(sys.argv[1:] if argv is None else argv)]),
        "columns": list(rows[0]) if rows else [],
        "rows": rows,
        "notes": notes,
    }
    print(notes)
    output = args.output or RESULTS / (
        "paraformer_vs_funasr_cuda.json" if device.type == "cuda" else "paraformer_vs_funasr.json"
    )
    atomic_write_text(output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
