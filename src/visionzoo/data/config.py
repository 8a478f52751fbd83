"""A model's data configuration and the transform built from it (timm's ``resolve_data_config``
and ``create_transform``).

``resolve_data_config(model)`` reads what a model's ``pretrained_cfg`` says its input should be
and returns a small dict, timm's keys and defaults::

    {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (...), "std": (...),
     "crop_pct": 0.875, "crop_mode": "center"}

plus ``fit`` and ``native_size`` when the cfg has them (a network trained here on small images
zero-padded to its input size: ``fit="pad"``). Overrides (``args`` or keywords: ``input_size``,
``img_size``, ``in_chans``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``)
win over the cfg, which wins over timm's defaults (224, bicubic, ImageNet mean/std, 0.875);
``use_test_size`` takes ``test_input_size`` / ``test_crop_pct`` where a cfg has them.

``create_transform(cfg, is_training=False)`` turns that dict (or a model, or a raw
``pretrained_cfg``) into a torchvision ``transforms.v2`` pipeline; the steps are described in
``visionzoo.data.transforms``. ``predict``, ``evaluate`` of published weights and deploy's
calibration images all use its evaluation transform.

torchvision is imported only when a transform is built (``import visionzoo`` stays fast).
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_CROP_PCT", "DEFAULT_INTERPOLATION", "DEFAULT_MEAN", "DEFAULT_STD",
           "create_transform", "resolve_data_config"]

# timm's defaults (timm.data.constants), used where neither an override nor the cfg says
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_MODE = "center"

OVERRIDES = ("input_size", "img_size", "in_chans", "chans", "interpolation", "mean", "std",
             "crop_pct", "crop_mode", "fit", "native_size")


def _pretrained_cfg(model: Any, pretrained_cfg: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if pretrained_cfg:
        return pretrained_cfg
    if isinstance(model, Mapping):
        return model
    return getattr(model, "pretrained_cfg", None) or {}  # a model, FeatureExtractor, Deployed


def _given(args: Mapping[str, Any] | Namespace | None,
           overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides that are set: ``args`` may be a whole argparse namespace (other keys are
    ignored, as timm does); keyword overrides must be known names."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown data config override {unknown[0]!r}; expected one of "
                         f"{', '.join(OVERRIDES)}")
    given = vars(args) if isinstance(args, Namespace) else dict(args or {})
    given = {k: v for k, v in given.items() if k in OVERRIDES}
    given.update(overrides)
    return {k: v for k, v in given.items() if v is not None}


def _input_size(given: Mapping[str, Any], cfg: Mapping[str, Any],
                use_test_size: bool) -> tuple[int, int, int]:
    chans = given.get("in_chans", given.get("chans"))
    if "input_size" in given:
        size = given["input_size"]
        if not isinstance(size, Sequence) or len(size) != 3:
            raise ValueError(f"input_size must be (channels, height, width); got {size!r}")
        return tuple(int(v) for v in size)  # type: ignore[return-value]
    if "img_size" in given:
        side = given["img_size"]
        if isinstance(side, int):
            h = w = side
        elif isinstance(side, Sequence) and len(side) == 2:
            h, w = side
        else:
            raise ValueError(f"img_size must be an int or (height, width); got {side!r}")
        return int(chans if chans is not None else cfg.get("input_size", (3,))[0]), int(h), int(w)
    size = cfg.get("test_input_size") if use_test_size else None
    size = tuple(size or cfg.get("input_size") or (3, 224, 224))
    if len(size) != 3:
        raise ValueError(f"pretrained_cfg input_size must be (channels, height, width); "
                         f"got {size!r}")
    c, h, w = (int(v) for v in size)
    return (int(chans) if chans is not None else c), h, w


def _stats(name: str, given: Mapping[str, Any], cfg: Mapping[str, Any],
           default: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if name in given:
        values = tuple(float(v) for v in given[name])
        if len(values) == 1:  # one value for every channel, as timm
            values *= channels
        if len(values) != channels:
            raise ValueError(f"{name} has {len(values)} values for {channels}-channel input")
        return values
    return tuple(float(v) for v in (cfg.get(name) or default))


def resolve_data_config(model: Any = None, args: Mapping[str, Any] | Namespace | None = None, *,
                        pretrained_cfg: Mapping[str, Any] | None = None,
                        use_test_size: bool = False, **overrides: Any) -> dict[str, Any]:
    """The input a model expects: input_size, interpolation, mean, std, crop_pct, crop_mode
    (and fit, native_size when its cfg has them). See the module docstring.

    ``model``: a model, a ``features_only`` FeatureExtractor, a Deployed, or a ``pretrained_cfg``
    dict (None: timm's defaults). ``pretrained_cfg`` replaces the model's. ``args``: a mapping or
    argparse namespace of overrides (unrelated keys ignored); keyword ``overrides`` likewise
    (unknown names are a ValueError). Resolving a resolved config returns it unchanged.
    Unlike timm, ``model`` comes first (as in timm's ``resolve_model_data_config``), and
    ``in_chans`` alone changes the cfg's channel count.
    """
    cfg = _pretrained_cfg(model, pretrained_cfg)
    given = _given(args, overrides)
    input_size = _input_size(given, cfg, use_test_size)
    crop_pct = given.get("crop_pct") or (cfg.get("test_crop_pct") if use_test_size else None)
    out: dict[str, Any] = {
        "input_size": input_size,
        "interpolation": str(given.get("interpolation") or cfg.get("interpolation")
                             or DEFAULT_INTERPOLATION),
        "mean": _stats("mean", given, cfg, DEFAULT_MEAN, input_size[0]),
        "std": _stats("std", given, cfg, DEFAULT_STD, input_size[0]),
        "crop_pct": float(crop_pct or cfg.get("crop_pct") or DEFAULT_CROP_PCT),
        "crop_mode": str(given.get("crop_mode") or cfg.get("crop_mode") or DEFAULT_CROP_MODE),
    }
    for key in ("fit", "native_size"):  # a network trained on small zero-padded images
        value = given.get(key, cfg.get(key))
        if value is not None:
            out[key] = value
    return out


def create_transform(cfg: Any = None, is_training: bool = False, **overrides: Any) -> Any:
    """The torchvision ``transforms.v2`` pipeline for ``cfg``: a resolved data config, a raw
    ``pretrained_cfg``, or a model (resolved with ``resolve_data_config(cfg, **overrides)``, so
    ``create_transform(**data_config)`` works too). It takes a PIL image or a uint8 (C, H, W)
    tensor and returns a normalised float32 (C, H, W) tensor.

    Evaluation (``is_training=False``): resize to ``size / crop_pct``, center crop, normalise:
    a ``visionzoo.data.transforms.PretrainedEvalTransform`` (a ``v2.Compose``), the transform
    ``predict`` and ``evaluate`` use. Training: RandomResizedCrop + horizontal flip, normalise
    (see ``visionzoo.data.transforms.pretrained_train_transform``). A config these cannot follow
    (interpolation, channels, mean/std lengths, crop_pct, crop_mode) is a one-line ValueError.
    """
    from visionzoo.data.transforms import PretrainedEvalTransform, pretrained_train_transform

    resolved = resolve_data_config(cfg, **overrides)
    if is_training:
        return pretrained_train_transform(resolved)
    return PretrainedEvalTransform(resolved)
