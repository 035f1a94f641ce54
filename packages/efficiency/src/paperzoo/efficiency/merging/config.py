"""The merge config (`paperzoo merge --config merge.yaml`) and its validation, done in full before any weight loads.

    base: path/to/base                      # the pretrained checkpoint the task vectors are taken against
    models:                                 # the fine-tuned checkpoints, same tensor names and shapes as base
      - {path: path/to/a, weight: 1.0}
      - {path: path/to/b, weight: 0.5, params: {density: 0.5}}   # per-model overrides (ties: density; DARE:
                                                                  # drop_rate, rescale), as in mergekit
    method: {name: ties, params: {density: 0.2, lambda_: 1.0}}
    exclude: ["classifier.*"]               # fnmatch patterns of tensors taken from base unchanged
    output: merged.safetensors
    seed: 0

Paths are relative to the working directory. `validate` checks, in order and before reading any weight: every
checkpoint exists and has a known format; the method is one of `method_names()` (a typo lists them); its parameters
are among `method_parameters(name)` and in range (`validate_parameters`), and so are each model's `params`
overrides, which may only name the method's per-model parameters (`validate_model_parameters`); weights are finite
and fit the method;
every exclude pattern matches a tensor of base; every model has exactly base's tensors with base's shapes, read from
headers (`io.inspect`); the output is a `.safetensors` path, is none of the inputs, and its directory is writable.
"""

import fnmatch
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.io import TensorInfo, checkpoint_format, inspect
from paperzoo.efficiency.merging.procedure import method_names, validate_model_parameters, validate_parameters


@dataclass
class ModelSpec:
    """One fine-tuned checkpoint: its path, its weight w_i in the merge, and its overrides of per-model parameters."""

    path: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodSpec:
    """The merge method by name (see `method_names()`) and its parameters (see `method_parameters(name)`)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeConfig:
    base: str
    models: list[ModelSpec]
    method: MethodSpec
    output: str
    exclude: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass(frozen=True)
class MergePlan:
    """A validated config with the tensor layout of base ({name: (shape, dtype)}), read from its header."""

    config: MergeConfig
    layout: dict[str, TensorInfo]


def _spec(value: Any, cls: type, where: str) -> Any:
    if isinstance(value, cls):
        return value
    require(isinstance(value, Mapping), f"{where} must be a mapping, got {value!r}")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key {unknown[0]!r}; expected some of {', '.join(sorted(allowed))}")
    try:
        return cls(**value)
    except TypeError as err:
        raise ConfigError(f"{where} is incomplete ({err})") from err


def config_from_dict(values: Mapping[str, Any]) -> MergeConfig:
    """A `MergeConfig` from parsed YAML; unknown or missing keys are a `ConfigError` naming them."""
    require(isinstance(values, Mapping), f"a merge config must be a mapping, got {type(values).__name__}")
    raw = dict(values)
    require(
        isinstance(raw.get("models"), list),
        f"models must be a list of {{path, weight, params}}, got {raw.get('models')!r}",
    )
    raw["models"] = [_spec(m, ModelSpec, f"models[{i}]") for i, m in enumerate(raw["models"])]
    method = raw.get("method")
    raw["method"] = _spec({"name": method} if isinstance(method, str) else method, MethodSpec, "method")
    return _spec(raw, MergeConfig, "the merge config")


def load_config(path: str | Path) -> MergeConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"merge config {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"merge config {path} is not valid YAML ({err})") from err
    return config_from_dict(values)


def _writable_directory(directory: Path) -> bool:
    """Whether `directory` exists and is writable, or could be created under its nearest existing ancestor."""
    while not directory.exists():
        if directory.parent == directory:
            return False
        directory = directory.parent
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def validate(config: MergeConfig) -> MergePlan:
    """Check everything about `config` that can be checked before loading weights (see the module docstring)."""
    # files first: a missing checkpoint is the commonest mistake
    paths = [Path(config.base), *(Path(m.path) for m in config.models)]
    for path in paths:
        checkpoint_format(path)
    require(len(config.models) >= 1, "models must list at least one checkpoint to merge, got none")
    names = method_names()
    require(
        config.method.name in names,
        f"merge method {config.method.name!r} is unknown; expected one of {', '.join(names)}",
    )
    validate_parameters(config.method.name, config.method.params)  # names and ranges
    for i, model in enumerate(config.models):
        require(
            isinstance(model.params, Mapping),
            f"models[{i}] ({model.path}) has params {model.params!r}; expected a mapping of parameter overrides",
        )
        try:  # one model at a time, so the message can name it by its path
            validate_model_parameters(config.method.name, config.method.params, [model.params], 1)
        except ConfigError as error:
            reason = str(error).removeprefix("model_params[0]: ")
            raise ConfigError(f"models[{i}] ({model.path}) params: {reason}") from None
    for i, model in enumerate(config.models):
        weight = model.weight
        require(
            isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight),
            f"models[{i}] ({model.path}) has weight {weight!r}; expected a finite number",
        )
        if config.method.name in ("ties", "dare_ties"):
            require(weight > 0, f"models[{i}] ({model.path}) has weight {weight}; {config.method.name} needs > 0")
        elif config.method.name == "average":
            require(weight >= 0, f"models[{i}] ({model.path}) has weight {weight}; average needs >= 0")
    if config.method.name == "average":
        require(sum(m.weight for m in config.models) > 0, "average needs weights with a positive sum, got all 0")
    require(isinstance(config.seed, int), f"seed must be an integer, got {config.seed!r}")
    output = Path(config.output)
    require(output.suffix == ".safetensors", f"output {output} must be a .safetensors file")
    require(
        all(output.resolve() != p.resolve() for p in paths), f"output {output} is one of the inputs; choose a new path"
    )
    require(_writable_directory(output.parent), f"output directory {output.parent} is not writable")
    # layouts from headers, no weights read
    layout = inspect(config.base)
    for pattern in config.exclude:
        require(
            any(fnmatch.fnmatchcase(name, pattern) for name in layout),
            f"exclude pattern {pattern!r} matches no tensor of base {config.base}",
        )
    for model in config.models:
        _check_layout(layout, inspect(model.path), config.base, model.path)
    return MergePlan(config=config, layout=layout)


def _check_layout(base: Mapping[str, TensorInfo], model: Mapping[str, TensorInfo], base_path: str, path: str) -> None:
    for name, (shape, _) in base.items():
        if name not in model:
            raise ConfigError(f"model {path} lacks tensor {name!r} of base {base_path}")
        if model[name][0] != shape:
            raise ConfigError(
                f"tensor {name!r} has shape {list(model[name][0])} in model {path} "
                f"but {list(shape)} in base {base_path}"
            )
    extra = sorted(set(model) - set(base))
    if extra:
        raise ConfigError(f"model {path} has tensor {extra[0]!r} that base {base_path} lacks")


def weights(config: MergeConfig) -> list[float]:
    return [float(m.weight) for m in config.models]


def model_params(config: MergeConfig) -> list[dict[str, Any]]:
    """Each model's overrides of the method's per-model parameters ({} for none)."""
    return [dict(m.params) for m in config.models]
