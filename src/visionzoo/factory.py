"""``create_model`` and ``load_checkpoint``: a registered network, with weights from a pretrained
tag, a Hub repo, a weights file or a visionzoo checkpoint.

This module sits above everything a model is made of, so nothing here is imported lazily:
layers <- registry <- models <- ports <- pretrained <- factory <- cli (``visionzoo/__init__``
imports this module, and with it every family and every port).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import visionzoo.models  # noqa: F401 - registers every family
from visionzoo.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    jsonable,
    read_header,
    read_tensors,
)
from visionzoo.layers import FeatureExtractor
from visionzoo.ports import (
    PortError,
    PortSpec,
    build_ported,
    check_layout,
    get_port,
    list_ports,
    load_converted,
    load_state_file,
    load_strict,
)
from visionzoo.pretrained import (
    HUB_PREFIX,
    PretrainedError,
    PretrainedTag,
    fetch,
    get_pretrained,
    hub_tag,
    split_tag,
)
from visionzoo.registry import InvalidArgumentError, check_arguments, lookup, model_info

__all__ = ["adapt_input_conv", "create_model", "load_checkpoint"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int = 3,
    pretrained: bool | str | Path = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    ``name`` may carry a pretrained tag, timm-style: ``"se_resnet50.legacy_in1k"``.
    ``pretrained``: False; True (the tag in the name, else the model's default tag; see
    ``visionzoo.list_pretrained``); a tag (``"legacy_in1k"``); ``"hf-hub:timm/<arch>.<tag>"`` (any
    timm Hub repo whose architecture has a port; ``@revision`` optional); or a local file: a
    visionzoo checkpoint, or a torchvision/timm/efficientnet_pytorch weights file of the same
    network. With weights and a ``num_classes`` other than theirs, everything but the classifier
    is loaded (a fresh classifier); with ``in_chans`` other than 3 the first convolution's weights
    are adapted as timm does (summed for 1 channel; repeated and rescaled for more).

    ``features_only=True`` returns a backbone whose forward gives the stage maps (NCHW), one per
    ``feature_info`` entry (or those in ``out_indices``).
    """
    name, name_tag = split_tag(name)
    fn, info = lookup(name)
    if num_classes is None:
        num_classes = info.num_classes
    check_arguments(name, num_classes=num_classes, in_chans=in_chans, **overrides)
    if pretrained is True and name_tag:
        pretrained = name_tag
    if pretrained:
        model = _pretrained(name, pretrained, num_classes, in_chans, overrides)
    else:
        try:
            model = fn(num_classes=num_classes, in_chans=in_chans, **overrides)
        except TypeError as e:  # a keyword the variant fixes itself (e.g. ResNet-50's depths)
            if "multiple values" not in str(e) and "unexpected keyword" not in str(e):
                raise
            raise InvalidArgumentError(f"{name}: {e.args[0].split('() ')[-1]}; the variant "
                                       f"sets it (choose another registered name)") from None
        model.model_name = name
        model.model_config = {"num_classes": num_classes, "in_chans": in_chans, **overrides}
        if name_tag:  # the tag's eval config, without its weights (as timm does)
            _set_cfg(model, get_pretrained(name, name_tag), in_chans)
    if features_only:
        return FeatureExtractor(model, out_indices=out_indices)
    return model


# ---------------------------------------------------------------------------------------------
# the pretrained path
# ---------------------------------------------------------------------------------------------


def _is_path(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    return value.endswith(WEIGHT_SUFFIXES) or "/" in value and not value.startswith(HUB_PREFIX) \
        or Path(value).is_file()


def _pretrained(name: str, pretrained: bool | str | Path, num_classes: int, in_chans: int,
                overrides: dict[str, Any]) -> nn.Module:
    if pretrained is not True and _is_path(pretrained):
        return _from_file(name, Path(pretrained), num_classes, in_chans, overrides)
    if isinstance(pretrained, str) and pretrained.startswith(HUB_PREFIX):
        tag = hub_tag(pretrained, model=name)
    else:
        tag = get_pretrained(name, None if pretrained is True else str(pretrained))
    spec = tag.port_spec
    path = fetch(tag)
    try:
        state = load_state_file(path)
    except PortError as e:
        raise PretrainedError(f"{tag.name}: {e}") from None
    model = _load_port(name, spec, state, num_classes, in_chans, overrides, what=tag.name)
    _set_cfg(model, tag, in_chans)
    return model


def _load_port(name: str, spec: PortSpec, state: dict[str, torch.Tensor], num_classes: int,
               in_chans: int, overrides: dict[str, Any], what: str) -> nn.Module:
    """Convert ``state`` with the port, build ``name`` in the port's layout and load it."""
    converted = spec.convert(dict(state))
    if spec.resolve is not None:  # one source network for several of ours (the width)
        ours, extra = spec.resolve(converted)
        spec = PortSpec(**{**spec.__dict__, "model": ours,
                           "overrides": {**spec.overrides, **extra}})
    if spec.model != name:
        raise PretrainedError(f"{what}: these are {spec.source} {spec.name} weights, for our "
                              f"{spec.model}, not {name}")
    check_layout(spec, overrides, name)
    model = build_ported(spec, num_classes, in_chans=in_chans, **overrides)
    if in_chans != 3:
        converted = _adapt_first_conv(model, converted, in_chans)
    load_converted(model, converted, spec)
    if in_chans != 3:
        model.pretrained_cfg = {**model.pretrained_cfg,
                                **_cfg_for_channels(model.pretrained_cfg, in_chans)}
    return model


def _from_file(name: str, path: Path, num_classes: int, in_chans: int,
               overrides: dict[str, Any]) -> nn.Module:
    """A visionzoo checkpoint, or a reference library's weights file of the same network."""
    if path.suffix == ".safetensors" and path.is_file() and _header(path) is not None:
        found = read_header(path)["model"]
        if found != name:
            raise PortError(f"{path} is a {found} checkpoint, not {name}")
        model = load_checkpoint(path)
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
            model.model_config["num_classes"] = num_classes
        return model
    state = load_state_file(path)
    specs = [get_port(src, ref) for src, ref in model_info(name).references.items()
             if (src, ref) in set(list_ports())]
    if not specs:
        raise PortError(f"{name}: no reference library's layout is known (no port)")
    errors = []
    for spec in specs:
        try:
            return _load_port(name, spec, state, num_classes, in_chans, overrides,
                              what=str(path))
        except PortError as e:
            errors.append(f"as {spec.source} {spec.name}: {e}")
    raise PortError(f"{path} does not fit {name}: " + " | ".join(errors))


def _header(path: Path) -> dict[str, Any] | None:
    try:
        return read_header(path)
    except (CheckpointError, OSError):
        return None


def _set_cfg(model: nn.Module, tag: PretrainedTag, in_chans: int) -> None:
    cfg = {**model.pretrained_cfg, **tag.pretrained_cfg()}
    if in_chans != 3:
        cfg.update(_cfg_for_channels(cfg, in_chans))
    model.pretrained_cfg = cfg


def _cfg_for_channels(cfg: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """input_size, mean and std for ``in_chans`` channels: one channel takes the mean of the RGB
    statistics; more channels repeat them (as the weights are repeated)."""
    out: dict[str, Any] = {}
    if "input_size" in cfg:
        out["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    for key in ("mean", "std"):
        if key in cfg and len(cfg[key]) == 3:
            v = tuple(float(x) for x in cfg[key])
            out[key] = (sum(v) / 3,) if in_chans == 1 else tuple(v[i % 3] for i in range(in_chans))
    return out


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """RGB first-convolution weights ``(O, 3, kh, kw)`` for ``in_chans`` input channels, with the
    arithmetic timm's ``adapt_input_conv`` uses: one channel sums the three (a grey image gives
    the response of the same image in RGB); more channels repeat R, G, B cyclically and scale by
    3 / in_chans (the response to a constant input is kept)."""
    if weight.ndim != 4:
        raise PortError(f"first conv weight has shape {tuple(weight.shape)}; expected 4 dims")
    dtype, w = weight.dtype, weight.float()
    c = w.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        if c % 3:
            raise PortError(f"cannot adapt a {c}-channel first conv to 1 channel")
        w = w.reshape(w.shape[0], c // 3, 3, *w.shape[2:]).sum(dim=2)
    elif c != 3:
        raise PortError(f"cannot adapt a {c}-channel first conv to {in_chans} channels "
                        f"(only 3-channel weights are adapted)")
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(dtype)


def _adapt_first_conv(model: nn.Module, converted: dict[str, torch.Tensor],
                      in_chans: int) -> dict[str, torch.Tensor]:
    first = model.pretrained_cfg.get("first_conv")
    key = f"{first}.weight"
    if not first or key not in converted:
        raise PortError(f"{getattr(model, 'model_name', 'model')}: cannot find its first conv "
                        f"({key!r}) in the weights to adapt to in_chans={in_chans}")
    return {**converted, key: adapt_input_conv(in_chans, converted[key])}


# ---------------------------------------------------------------------------------------------
# visionzoo checkpoints
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    return_extra: bool = False) -> Any:
    """Rebuild the model a checkpoint was saved from (or load into ``model`` after checking that
    it is the same architecture and configuration). ``return_extra`` also returns
    ``(header, extra_tensors)``."""
    path = Path(path)
    header = read_header(path)
    if header is None:
        raise CheckpointError(f"{path} has no visionzoo header: it is a plain weights file; use "
                              f"visionzoo.port() or create_model(..., pretrained=PATH)")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r}")
    state = read_tensors(path)
    name, config = header["model"], header.get("config", {})
    if model is None:
        model = create_model(name, **config)
    else:
        _check_same_model(path, model, name, config)
    own_keys = set(model.state_dict())
    weights = {k: v for k, v in state.items() if k in own_keys}
    extra_tensors = {k: v for k, v in state.items() if k not in own_keys}
    try:
        load_strict(model, weights, f"checkpoint {path}")
    except PortError as e:
        raise CheckpointError(str(e)) from None
    if header.get("pretrained_cfg"):
        model.pretrained_cfg = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in header["pretrained_cfg"].items()}
    if return_extra:
        return model, header, extra_tensors
    return model


def _check_same_model(path: Path, model: nn.Module, name: str, config: dict[str, Any]) -> None:
    own_name = getattr(model, "model_name", type(model).__name__)
    own_cfg = {k: jsonable(v) for k, v in getattr(model, "model_config", {}).items()}
    if own_name != name:
        raise CheckpointError(f"{path} holds a {name} checkpoint; it cannot load into {own_name}")
    missing = object()  # an argument given as None differs from one not given
    diff = {k for k in set(config) | set(own_cfg)
            if config.get(k, missing) != own_cfg.get(k, missing)}
    if diff:
        pairs = ", ".join(f"{k}: checkpoint {config.get(k)!r} vs model {own_cfg.get(k)!r}"
                          for k in sorted(diff))
        raise CheckpointError(f"{path} was saved from {name} with another configuration "
                              f"({pairs})")
