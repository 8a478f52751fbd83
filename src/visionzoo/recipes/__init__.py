"""Training recipes: the keys a recipe may set, the YAML files shipped here, and their resolution.

Every key, its default, type and meaning is in ``RECIPE_KEYS`` (``visionzoo train --help`` lists
them; each is also a ``--key-name VALUE`` option). The ``*.yaml`` files of this folder are the
papers' recipes and a modern small-data one; ``list_recipes()`` names them. This module imports
no torch, so the command line can build its options cheaply.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["LEGACY_KEYS", "RECIPE_KEYS", "RecipeError", "RecipeKey", "coerce", "list_recipes",
           "load_recipe", "resolve_config", "upgrade_keys"]


class RecipeError(ValueError):
    """An unknown recipe, an unknown key or a value of the wrong type."""


# ---------------------------------------------------------------------------------------------
# recipe keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeKey:
    name: str
    default: Any
    kind: str  # int | float | bool | str | floats | ints | dict | any
    help: str
    choices: tuple[str, ...] = ()
    nullable: bool = False
    auto: bool = False  # "auto": filled in from the model / dataset
    group: str = "optimization"


def _k(name: str, default: Any, kind: str, help: str, **kw: Any) -> RecipeKey:
    return RecipeKey(name, default, kind, help, **kw)


RECIPE_KEYS: dict[str, RecipeKey] = {k.name: k for k in [
    _k("description", "", "str", "what the recipe is (informational)", group="about"),
    _k("source", "", "str", "where its numbers come from (informational)", group="about"),
    # optimization
    _k("epochs", 10, "int", "training epochs"),
    _k("batch_size", 128, "int", "global batch (split evenly over distributed ranks)"),
    _k("lr", 0.1, "float", "peak learning rate (for lr_base_batch images when that is set)"),
    _k("lr_base_batch", None, "int", "scale lr, warmup_lr, min_lr by batch_size / this",
       nullable=True),
    _k("opt", "sgd", "str", "optimizer", choices=("sgd", "adamw", "rmsprop", "rmsprop_tf")),
    _k("momentum", 0.9, "float", "SGD / RMSprop momentum"),
    _k("nesterov", False, "bool", "Nesterov momentum (SGD)"),
    _k("betas", [0.9, 0.999], "floats", "AdamW betas"),
    _k("opt_eps", 1e-8, "float", "AdamW / RMSprop epsilon"),
    _k("rmsprop_decay", 0.9, "float", "RMSprop moving-average decay of the squared gradient"),
    _k("weight_decay", 1e-4, "float", "weight decay (L2 for SGD/RMSprop, decoupled for AdamW)"),
    _k("decay_norm_bias", False, "bool",
       "also decay norm weights, biases and model.no_weight_decay() (as the oldest papers did)"),
    _k("sched", "cosine", "str", "learning-rate schedule after warm-up",
       choices=("cosine", "multistep", "step", "constant")),
    _k("warmup_epochs", 0.0, "float", "linear warm-up length (fractions allowed)"),
    _k("warmup_lr", 0.0, "float", "learning rate at the start of the warm-up"),
    _k("min_lr", 0.0, "float", "final learning rate of the cosine schedule"),
    _k("milestones", [30, 60], "floats", "multistep: epochs where lr is multiplied by decay_rate"),
    _k("decay_rate", 0.1, "float", "multistep/step: factor applied at each decay"),
    _k("decay_epochs", 1.0, "float", "step: epochs between decays"),
    _k("label_smoothing", 0.0, "float", "label smoothing of the cross-entropy"),
    _k("clip_grad", None, "float", "clip the gradient norm to this value", nullable=True),
    _k("ema", False, "bool", "keep an exponential moving average of the weights"),
    _k("ema_decay", 0.9999, "float", "EMA decay per step"),
    _k("amp", "none", "str", "mixed precision: autocast to bfloat16, or to float16 with a "
       "gradient scaler (CPU and GPU)", choices=("none", "bf16", "fp16")),
    _k("channels_last", False, "bool", "channels-last memory format"),
    _k("compile", False, "bool", "torch.compile the model"),
    _k("sync_bn", False, "bool", "BatchNorm statistics over all ranks (distributed runs)"),
    _k("seed", 0, "int", "seed of every random choice"),
    _k("deterministic", False, "bool", "deterministic GPU kernels (slower)"),
    _k("model_args", {}, "dict", "extra create_model arguments, e.g. {drop_path_rate: 0.2}"),
    _k("pretrained", None, "any", "start from published weights (true) or a weights file",
       nullable=True),
    # data
    _k("img_size", "auto", "int", "network input side (auto: the model's)", auto=True,
       group="data"),
    _k("fit", "auto", "str", "small in-memory images to img_size: pad, resize or auto",
       choices=("auto", "pad", "resize"), group="data"),
    _k("in_chans", "auto", "int", "input channels (auto: the dataset's; 3 when pretrained)",
       auto=True, group="data"),
    _k("mean", "auto", "floats", "normalization mean (auto: dataset's or model's)", auto=True,
       group="data"),
    _k("std", "auto", "floats", "normalization std (auto: dataset's or model's)", auto=True,
       group="data"),
    _k("crop_pct", "auto", "float", "evaluation center-crop fraction (auto: the model's)",
       auto=True, group="data"),
    _k("interpolation", "bilinear", "str", "resize interpolation",
       choices=("bilinear", "bicubic", "nearest"), group="data"),
    _k("train_crop", "auto", "str", "training crop",
       choices=("auto", "pad_crop", "rrc", "scale_jitter", "none"), group="data"),
    _k("crop_padding", 4, "int", "pad_crop: pixels of padding", group="data"),
    _k("rrc_scale", [0.08, 1.0], "floats", "rrc: area fraction range", group="data"),
    _k("scale_jitter", [256, 480], "ints", "scale_jitter: shorter-side range", group="data"),
    _k("hflip", 0.5, "float", "horizontal flip probability", group="data"),
    _k("auto_augment", None, "str", "policy", nullable=True,
       choices=("randaugment", "autoaugment", "trivialaugment"), group="data"),
    _k("ra_num_ops", 2, "int", "RandAugment operations per image", group="data"),
    _k("ra_magnitude", 9, "int", "RandAugment magnitude (0..30)", group="data"),
    _k("random_erasing", 0.0, "float", "RandomErasing probability", group="data"),
    _k("mixup_alpha", 0.0, "float", "MixUp Beta(a, a) (0: off)", group="data"),
    _k("cutmix_alpha", 0.0, "float", "CutMix Beta(a, a) (0: off)", group="data"),
    _k("mix_prob", 1.0, "float", "probability a batch is mixed", group="data"),
    _k("mix_switch_prob", 0.5, "float", "probability of CutMix when both are on", group="data"),
    _k("pipeline", "loader", "str", "input pipeline: loader (per-image transforms in loader "
       "workers), tensor (in-memory datasets batched and augmented as whole tensors in the main "
       "process; pad-and-crop, flip), auto (tensor where it can)",
       choices=("loader", "tensor", "auto"), group="data"),
    _k("tta_hflip", False, "bool", "evaluation averages the logits of each image and its mirror",
       group="data"),
    _k("workers", "auto", "int", "loader worker processes per rank", auto=True, group="data"),
    _k("eval_batch_size", "auto", "int", "evaluation batch per rank (auto: 2x training's)",
       auto=True, group="data"),
    # run
    _k("checkpoint_every", 0, "int", "also checkpoint every N steps (0: each epoch only)",
       group="run"),
    _k("max_steps_per_epoch", None, "int", "cut epochs short (quick runs)", nullable=True,
       group="run"),
    _k("device", "auto", "str", "auto, cpu, cuda, cuda:N", group="run"),
    _k("progress", "auto", "str", "progress display", choices=("auto", "bar", "lines", "off"),
       group="run"),
    _k("log", "none", "str", "also log each epoch's metrics to TensorBoard (<run>/tensorboard; "
       "the [tensorboard] extra)", choices=("none", "tensorboard"), group="run"),
]}

# keys of older recipes and run configurations, and the key and value each became
LEGACY_KEYS = {"bf16": lambda v: ("amp", "bf16" if coerce_bool("bf16", v) else "none")}


def upgrade_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with legacy keys replaced (``bf16: true`` -> ``amp: bf16``), so recipes and
    runs saved before a rename still load and resume; a new key given beside its old one wins."""
    out = {k: v for k, v in values.items() if k not in LEGACY_KEYS}
    for key, convert in LEGACY_KEYS.items():
        if key in values:
            new_key, new_value = convert(values[key])
            out.setdefault(new_key, new_value)
    return out


def coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "yes", "true", "off", "no", "false"):
        return value.lower() in ("on", "yes", "true")
    raise RecipeError(f"{key} expects bool; got {value!r}")

_NUMBER = (int, float)


def coerce(key: str, value: Any) -> Any:
    """Validate and convert one recipe value (strings from the command line parse as YAML)."""
    import yaml

    if key not in RECIPE_KEYS:
        import difflib

        close = difflib.get_close_matches(key, RECIPE_KEYS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown recipe key {key!r}{hint}")
    spec = RECIPE_KEYS[key]
    if isinstance(value, str) and value in spec.choices:  # "none" is a choice of amp, train_crop
        return value
    if isinstance(value, str) and spec.kind != "str":
        try:
            value = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            pass
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if spec.nullable or (spec.kind == "str" and not spec.choices):
            return None if spec.nullable else ""
        raise RecipeError(f"{key} needs a value")
    if spec.auto and value == "auto":
        return "auto"
    kind = spec.kind

    def bad() -> RecipeError:
        return RecipeError(f"{key} expects {kind}" + (f" (one of {', '.join(spec.choices)})"
                                                      if spec.choices else "") + f"; got {value!r}")

    def num(v: Any, typ: type) -> Any:
        if isinstance(v, bool):
            raise bad()
        if isinstance(v, str):
            try:
                v = float(v)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                raise bad() from None
        if not isinstance(v, _NUMBER):
            raise bad()
        if typ is int:
            if float(v) != int(v):
                raise bad()
            return int(v)
        return float(v)

    if kind == "int":
        return num(value, int)
    if kind == "float":
        return num(value, float)
    if kind == "bool":
        return coerce_bool(key, value)
    if kind in ("floats", "ints"):
        if isinstance(value, _NUMBER) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list | tuple):
            raise bad()
        return [num(v, int if kind == "ints" else float) for v in value]
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if kind == "str":
        if isinstance(value, bool) and key == "auto_augment" and not value:
            return None
        value = str(value)
        if spec.choices and value not in spec.choices:
            raise bad()
        return value
    return value  # any


def list_recipes() -> list[str]:
    """Names of the recipes shipped in the package."""
    folder = resources.files("visionzoo.recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A packaged recipe by name (``resnet``, ``swin``, ``small_cpu`` ...) or a YAML file."""
    import yaml

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {name_or_path}")
        text = path.read_text()
    else:
        res = resources.files("visionzoo.recipes") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise RecipeError(f"unknown recipe {name_or_path!r}; packaged recipes: "
                              f"{', '.join(list_recipes())} (or a .yaml path)")
        text = res.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {name_or_path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {name_or_path}: expected a mapping of keys")
    try:
        return {k: coerce(k, v) for k, v in upgrade_keys(data).items()}
    except RecipeError as e:
        raise RecipeError(f"recipe {name_or_path}: {e}") from None


def resolve_config(recipe: str | None = None, overrides: Mapping[str, Any] | None = None,
                   base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- recipe <- overrides (or ``base`` <- overrides when resuming). ``auto`` values
    stay ``auto`` here; ``train()`` fills them in from the model and dataset."""
    if base is not None:
        cfg = {k: copy.deepcopy(s.default) for k, s in RECIPE_KEYS.items()}  # keys added since
        cfg.update(upgrade_keys(base))
    else:
        cfg = {k: copy.deepcopy(s.default) for k, s in RECIPE_KEYS.items()}
        if recipe:
            cfg.update(load_recipe(recipe))
    for k, v in upgrade_keys(overrides or {}).items():
        cfg[k] = coerce(k, v)
    for k in ("epochs", "batch_size"):
        if cfg[k] < 1:
            raise RecipeError(f"{k} must be >= 1; got {cfg[k]}")
    if cfg["lr"] <= 0:
        raise RecipeError(f"lr must be > 0; got {cfg['lr']}")
    return cfg
