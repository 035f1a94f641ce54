"""Claim check for "Towards Neural Scaling Laws for Time Series Foundation Models" (CATALOG 79, arXiv 2410.12360).

The claim: the log-likelihood loss of a TSFM follows a power law in parameter count and in data size on
out-of-distribution data as it does in distribution, with a similar exponent.

The run, all in this process, fixed seeds:

- a grid of model sizes (the x4 ladder `SIZES`, ~10k to ~620k parameters) x data sizes (nested random subsets of the
  training windows, x4 apart, the largest as many windows as one run draws, so the smallest is seen ~16 times) of
  the encoder-only TSFM, each trained for the same number of steps with the paper's masked NLL objective; in full
  mode also the decoder-only TSFM (next-patch NLL) on the two fitted axes only (every size at the largest data size,
  the largest size at every data size), to fit the CPU budget;
- every model is evaluated on ID windows (the later part of its pretraining series) and OOD windows (series never
  trained on): the NLL per step of the H-step forecast from the L-step lookback, on the scaler-standardised values;
- the paper's fit (a straight line in log-log axes, `L = A X^-alpha`; `paperzoo.core.scaling.fit_power_law`) of the
  NLL against parameters (at the largest data size) and against training windows (at the largest model), ID and OOD,
  with R^2 and 95% bootstrap intervals; fits with an irreducible term are recorded beside them.

Decision rule (for the encoder, the architecture the paper finds to scale best): on both axes the ID and the OOD loss
fall with scale (alpha > 0), the OOD fit is a power law as good as R^2 >= `MIN_R2`, and the OOD exponent is within a
factor `RATIO_BAND` of the ID exponent. The encoder-vs-decoder comparison (the paper: the encoder scales better) is
recorded, not decided.

Deviation: the NLL is measured on per-window standardised values (scale-free, so series of any magnitude weigh
alike); the paper reports it in the data's units. A constant shift per window, it changes no model's ranking, but the
pure power law needs a positive loss, which the check verifies before fitting.
"""

import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import torch

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.scaling import PowerLawFit, fit_power_law, intervals_overlap
from paperzoo.timeseries.scaling.data import ScalingSplit, Source, scaling_split
from paperzoo.timeseries.scaling.model import (
    Kind,
    PatchTSFM,
    forecast_nll,
    num_parameters,
    sample_num_masked,
    to_patches,
    tsfm,
    tsfm_nll,
)

#: how far apart the OOD and ID exponents may be (a factor) and still count as similar
RATIO_BAND = 2.0
#: how well the OOD power law must fit (log-space R^2)
MIN_R2 = 0.8


@dataclass(frozen=True)
class Setting:
    sizes: tuple[str, ...]
    data_fractions: tuple[float, ...]  # of the windows one run draws (steps x batch): x16, x4, x1 epochs
    kinds: tuple[Kind, ...]
    steps: int
    batch_size: int
    context_length: int = 48
    prediction_length: int = 16
    patch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 20
    bootstrap: int = 1000
    seed: int = 0
    threads: int = 1


QUICK = Setting(
    sizes=("xs", "s", "m"), data_fractions=(1 / 16, 1 / 4, 1.0), kinds=("encoder", "decoder"), steps=40, batch_size=16,
    warmup=5, bootstrap=200,
)  # fmt: skip
FULL = Setting(
    sizes=("xs", "s", "m", "l"), data_fractions=(1 / 16, 1 / 4, 1.0), kinds=("encoder", "decoder"), steps=300,
    batch_size=32,
)  # fmt: skip


def train(model: PatchTSFM, windows: torch.Tensor, setting: Setting, seed: int) -> float:
    """Pretrain on `windows` [W, T] with AdamW, linear warmup then cosine decay; returns the last training loss."""
    generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "mask_embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "mask_embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": setting.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=setting.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def multiplier(step: int) -> float:
        if step < setting.warmup:
            return (step + 1) / setting.warmup
        progress = (step - setting.warmup) / max(1, setting.steps - setting.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(setting.steps):
        index = torch.randint(0, len(windows), (setting.batch_size,), generator=generator)
        patches = to_patches(windows[index], setting.patch_size)  # [B, N, P]
        num_predicted = sample_num_masked(len(index), patches.shape[1], generator)
        loss = tsfm_nll(model, patches, num_predicted, standardized=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    return float(loss.detach())


def evaluate(model: PatchTSFM, windows: torch.Tensor, setting: Setting, chunk: int = 512) -> float:
    """Mean forecast NLL per step over `windows` [W, L + H]."""
    split = setting.context_length
    values = [forecast_nll(model, w[:, :split], w[:, split:]) for w in windows.split(chunk)]
    return float(torch.cat(values).mean())


def fit_axis(x: list[float], y: list[float], setting: Setting) -> tuple[PowerLawFit, PowerLawFit | None]:
    """The paper's pure power law, and (where it can be fitted) one with an irreducible term."""
    pure = fit_power_law(x, y, irreducible=False, bootstrap=setting.bootstrap, seed=setting.seed)
    with_e = None
    if len(x) >= 3:
        with_e = fit_power_law(x, y, irreducible=True, bootstrap=0, seed=setting.seed, e_min=-10.0)
    return pure, with_e


def check(quick: bool = False, source: Source = "corpus") -> ClaimResult:
    """The claim check on the package corpus (`source="synthetic"`: the catalog's generated-ID / real-OOD design)."""
    setting = QUICK if quick else FULL
    with torch_threads(setting.threads):
        return _run(setting, source)


def _run(setting: Setting, source: Source) -> ClaimResult:
    window = setting.context_length + setting.prediction_length
    split: ScalingSplit = scaling_split(source, window=window, seed=setting.seed)
    order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(setting.seed))
    # data size = distinct training windows; every run draws the same steps x batch windows, so the smallest set is
    # seen ~16 times and the largest about once (capped by what the source has)
    drawn = setting.steps * setting.batch_size
    data_sizes = [min(len(split.train), max(setting.batch_size, int(round(f * drawn)))) for f in setting.data_fractions]

    params: dict[tuple[str, str], int] = {}  # (kind, size) -> parameter count
    nll: dict[tuple[str, str, int, str], float] = {}  # (kind, size, data, "id" | "ood") -> NLL
    timings: dict[str, float] = {}
    for kind in setting.kinds:
        started = time.perf_counter()
        for size in setting.sizes:
            for data in data_sizes:
                if kind != setting.kinds[0] and data != data_sizes[-1] and size != setting.sizes[-1]:
                    continue  # other architectures: only the two fitted axes, not the whole grid
                torch.manual_seed(setting.seed)
                model = tsfm(size, kind, setting.patch_size, max_patches=window // setting.patch_size)
                params[kind, size] = num_parameters(model)
                train(model, split.train[order[:data]], setting, setting.seed)
                nll[kind, size, data, "id"] = evaluate(model, split.id_val, setting)
                nll[kind, size, data, "ood"] = evaluate(model, split.ood, setting)
                print(
                    f"tsfm_scaling: {kind} {size} ({params[kind, size]} params) x {data} windows: ID NLL "
                    f"{nll[kind, size, data, 'id']:.4f}, OOD NLL {nll[kind, size, data, 'ood']:.4f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        timings[kind] = time.perf_counter() - started

    largest_data, largest_model = data_sizes[-1], setting.sizes[-1]
    fits: dict[tuple[str, str, str], tuple[PowerLawFit, PowerLawFit | None]] = {}
    figures: dict[str, dict[str, float]] = {kind: {} for kind in setting.kinds}
    curves: dict[str, list[tuple[float, float]]] = {}
    for kind in setting.kinds:
        for dist in ("id", "ood"):
            by_size = [nll[kind, s, largest_data, dist] for s in setting.sizes]
            by_data = [nll[kind, largest_model, d, dist] for d in data_sizes]
            axes = {
                "params": ([float(params[kind, s]) for s in setting.sizes], by_size),
                "data": ([float(d) for d in data_sizes], by_data),
            }
            for axis, (x, y) in axes.items():
                curves[f"{kind} {dist.upper()} NLL vs {axis}"] = list(zip(x, y, strict=True))
                if min(y) <= 0:
                    warnings.warn(f"{kind} {dist} NLL reaches {min(y):.3f} <= 0: no pure power law", stacklevel=2)
                    continue
                fits[kind, dist, axis] = fit_axis(x, y, setting)
                pure, with_e = fits[kind, dist, axis]
                figures[kind] |= pure.as_dict(f"{dist.upper()} {axis}: ")
                if with_e is not None:
                    figures[kind] |= {
                        f"{dist.upper()} {axis}: alpha (with E)": with_e.alpha,
                        f"{dist.upper()} {axis}: E (with E)": with_e.E,
                        f"{dist.upper()} {axis}: r2 (with E)": with_e.r2,
                    }
        for (nll_kind, size, data, dist), value in nll.items():
            if nll_kind == kind:
                figures[kind][f"NLL {dist.upper()} {size} ({params[kind, size]} params) x {data} windows"] = value
        figures[kind]["training seconds, whole grid"] = timings[kind]

    primary: Kind = setting.kinds[0]
    criteria: list[Criterion] = []
    for axis in ("params", "data"):
        if (primary, "id", axis) not in fits or (primary, "ood", axis) not in fits:
            criteria.append(Criterion(f"{axis}: NLL positive, so a power law can be fitted", 0.0, ">=", 1.0))
            continue
        fid, food = fits[primary, "id", axis][0], fits[primary, "ood", axis][0]
        ratio = food.alpha / fid.alpha if fid.alpha > 0 else float("inf")
        figures[primary][f"{axis}: alpha OOD / alpha ID"] = ratio
        figures[primary][f"{axis}: ID and OOD alpha intervals overlap"] = float(
            intervals_overlap(fid.ci["alpha"], food.ci["alpha"])
        )
        log_ratio = abs(math.log(max(ratio, 1e-12)))
        criteria += [
            Criterion(f"{axis}: ID exponent alpha", fid.alpha, ">=", 0.0),
            Criterion(f"{axis}: OOD exponent alpha", food.alpha, ">=", 0.0),
            Criterion(f"{axis}: OOD power-law R^2", food.r2, ">=", MIN_R2),
            Criterion(f"{axis}: |log(alpha OOD / alpha ID)|", log_ratio, "<=", math.log(RATIO_BAND)),
        ]

    baselines = {kind: figures[kind] for kind in setting.kinds[1:]}
    for kind in setting.kinds[1:]:
        for dist in ("id", "ood"):
            for axis in ("params", "data"):
                if (kind, dist, axis) in fits and (primary, dist, axis) in fits:
                    baselines[kind][f"{dist.upper()} {axis}: alpha {primary} - alpha {kind}"] = (
                        fits[primary, dist, axis][0].alpha - fits[kind, dist, axis][0].alpha
                    )
    return ClaimResult(
        key="tsfm_scaling",
        claim=(
            "The NLL of a time-series foundation model follows a power law in parameters and in data size on "
            "out-of-distribution series as it does in distribution, with a similar exponent."
        ),
        paper_reported=(
            "Yao et al. (ICLR 2025, arXiv:2410.12360), 1K-1B parameters, 10M-16B time points of LOTSA: ID and OOD "
            "(LSF, Monash) log-likelihood both follow power laws in parameters, compute and data; encoder-only "
            "Transformers scale better than decoder-only; the fitted OOD exponent is close to the ID one."
        ),
        decision_rule=(
            f"{primary}, pure power law L = A X^-alpha fitted in log-log axes (as the paper) on each axis: "
            f"alpha_ID >= 0, alpha_OOD >= 0, OOD R^2 >= {MIN_R2}, and alpha_OOD / alpha_ID within a factor "
            f"{RATIO_BAND:g}; the {' and '.join(setting.kinds[1:]) or 'other architecture'} comparison is recorded only"
        ),
        method=figures[primary],
        baselines=baselines,
        criteria=criteria,
        curves=curves,
        plot={
            "xlabel": "parameters or training windows",
            "ylabel": "NLL (per-window standardised)",
            "xscale": "log",
            "yscale": "log",
        },
        config={
            **asdict(setting),
            "source": split.source,
            "train windows": len(split.train),
            "ID windows": len(split.id_val),
            "OOD windows": len(split.ood),
            "pretraining series": split.n_pretrain_series,
            "OOD series": split.n_ood_series,
            "data sizes (windows)": data_sizes,
            "parameters": {f"{kind} {size}": count for (kind, size), count in params.items()},
            "nll": "forecast NLL per step on per-window standardised values",
        },
    )
