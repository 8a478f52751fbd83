"""Grad-CAM: where in the image the evidence for a class lies.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization." ICCV 2017. arXiv 1610.02391.

* §3, eq. (1): the weight of channel k for class c is the spatial mean of the gradient of the
  class score y^c (the logit, before the softmax) with respect to the map A^k:
  alpha_k^c = 1/Z sum_ij dy^c / dA^k_ij.
* §3, eq. (2): L^c = ReLU(sum_k alpha_k^c A^k); the ReLU keeps the regions whose increase raises
  the class score (the negative ones belong to other classes).
* The map is upsampled bilinearly to the input size and scaled to [0, 1] for display (as the
  paper's figures and pytorch-grad-cam do); a constant map says nothing about where, so it
  stays all zeros instead of being divided by zero.

Which map: the last stage map by default, the module of the last ``feature_info`` entry (the
paper uses the last convolutional layer: the deepest map that still has a spatial layout). That
is ``stages.3`` for ResNet and Swin (whose stage outputs are NCHW between stages, so no permute
is needed here), ``conv_head`` for EfficientNet, ``pools.4`` (pool5) for VGG, ``act`` for
DenseNet (the final BN-ReLU), ... ``layer`` picks another module by its dotted path or by its
``feature_info`` name.

How: a forward hook on that module replaces its output by a detached copy that requires grad,
so ``torch.autograd.grad`` of the target logit gives dy/dA whatever the parameters'
``requires_grad`` and whether the caller is under ``torch.no_grad()`` or inference mode; nothing
upstream of the map is differentiated. The hook is removed and the model's train/eval mode
restored before returning, even on an error; no parameter's ``.grad`` is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CAM_SUFFIXES", "CamResult", "grad_cam", "save_cam"]

CAM_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".pdf")


@dataclass
class CamResult:
    """One Grad-CAM: the map, the crop the network saw, and what was explained."""

    heatmap: np.ndarray  # (H, W) float32 in [0, 1], at the model's input resolution
    image: np.ndarray  # (H, W, 3) uint8: the network's input crop, de-normalised, for display
    target: int  # the class index explained
    probability: float  # softmax probability of `target`
    label: str | None  # its class name when known (ImageNet names for 1000 classes)
    layer: str  # the module whose output map was used (e.g. "layer4", "stages.3")


def _resolve_layer(model: nn.Module, layer: str | None) -> str:
    """The dotted module path of the map to explain: the last ``feature_info`` entry's module by
    default; ``layer`` may be a module path or a ``feature_info`` name ("conv5_x")."""
    info = list(getattr(model, "feature_info", None) or [])
    if layer is None:
        if not info or "module" not in info[-1]:
            raise ValueError(f"{type(model).__name__} has no feature_info naming its last stage "
                             f"map; pass layer='<module path>'")
        return str(info[-1]["module"])
    by_name = {str(f.get("name")): str(f["module"]) for f in info if "module" in f}
    path = by_name.get(layer, layer)
    try:
        model.get_submodule(path)
    except AttributeError:
        names = ", ".join(by_name) or "none"
        raise ValueError(f"layer {layer!r} is not a module of {type(model).__name__} (stage maps: "
                         f"{names})") from None
    return path


def _input_tensor(model: nn.Module, image: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """(1, C, H, W) float input and the data config whose mean/std de-normalise it."""
    from visionzoo.data.config import create_transform, resolve_data_config

    cfg = resolve_data_config(model)
    if isinstance(image, torch.Tensor):
        x = image
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
            raise ValueError(f"a tensor image must be a normalised float (C, H, W) or "
                             f"(1, C, H, W); got {x.dtype} {tuple(image.shape)}")
        return x, cfg
    from PIL import Image

    from visionzoo.data.transforms import load_image, to_rgb

    transform = create_transform(cfg)
    if isinstance(image, Image.Image):
        pil = to_rgb(image)
    elif isinstance(image, (str, Path)):
        pil = load_image(image, min_size=getattr(transform, "min_size", None))
    else:
        raise TypeError(f"image must be a path, a PIL image or a tensor; got "
                        f"{type(image).__name__}")
    return transform(pil).unsqueeze(0), cfg


def _display_image(x: torch.Tensor, cfg: dict[str, Any]) -> np.ndarray:
    """The normalised input back as (H, W, 3) uint8 (one channel is shown grey)."""
    x = x[0].detach().float().cpu()
    c = x.shape[0]
    mean = torch.tensor(list(cfg["mean"])[:c] + [0.0] * max(0, c - len(cfg["mean"])))
    std = torch.tensor(list(cfg["std"])[:c] + [1.0] * max(0, c - len(cfg["std"])))
    x = x * std.view(-1, 1, 1) + mean.view(-1, 1, 1)
    x = x[:3] if c >= 3 else x[:1].expand(3, -1, -1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _class_label(model: nn.Module, target: int,
                 class_names: Sequence[str] | None) -> str | None:
    if class_names is not None:
        return str(class_names[target]) if target < len(class_names) else None
    if int(getattr(model, "num_classes", 0)) == 1000:
        from visionzoo.predict import imagenet_class_names

        return imagenet_class_names()[target]
    return None


def _is_constant(cam: torch.Tensor) -> bool:
    """Whether the map (before upsampling, where a 1x1 map is exactly constant) varies by less
    than float32 rounding of its values; bilinear upsampling alone adds a few ulps of ripple."""
    span = float(cam.max() - cam.min())
    return not np.isfinite(span) or span <= 1e-5 * float(cam.abs().max())


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scaled to [0, 1] (a map with no variation at all becomes zeros)."""
    low, high = cam.min(), cam.max()
    return torch.zeros_like(cam) if high <= low else (cam - low) / (high - low)


def grad_cam(model: nn.Module, image: Any, target: int | None = None, *,
             layer: str | None = None,
             class_names: Sequence[str] | None = None) -> CamResult:
    """Grad-CAM of ``target`` (default: the top class) for one image.

    ``image``: a path or a PIL image (preprocessed with the model's ``pretrained_cfg`` eval
    transform, as ``predict`` does), or an already-normalised float tensor (C, H, W) or
    (1, C, H, W). ``layer``: the module whose output map is explained (a dotted path or a
    ``feature_info`` name); default the last stage map. ``class_names`` name the classes (e.g.
    a checkpoint's); default ImageNet's for a 1000-class model, else ``label`` is None.
    The model is left as it was: same mode, no hooks, no gradients stored in it.
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        raise ValueError("the model has no classifier (num_classes=0); Grad-CAM explains a class")
    if target is not None and not 0 <= int(target) < num_classes:
        raise ValueError(f"target must be a class index in [0, {num_classes}); got {target}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class model")
    path = _resolve_layer(model, layer)
    x, cfg = _input_tensor(model, image)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)

    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        rest = ()
        if isinstance(output, (tuple, list)):
            output, rest = output[0], tuple(output[1:])
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        out = leaf.clone()  # a non-leaf: later in-place ops (a ReLU) cannot touch the leaf
        return (out, *rest) if rest else out

    handle = model.get_submodule(path).register_forward_hook(hook)
    was_training = model.training
    model.eval()  # BN statistics and dropout must not change (nor change the answer)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone()  # an inference-mode tensor cannot enter autograd
            logits = model(x)
            if not captured:
                raise ValueError(f"layer {path!r} did not run in the forward pass")
            if logits.dim() != 2:
                raise ValueError(f"expected (1, classes) logits; got {tuple(logits.shape)}")
            probs = logits.detach().float().softmax(dim=-1)[0]
            cls = int(probs.argmax()) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, cls], captured[-1], allow_unused=True)
    finally:
        handle.remove()
        model.train(was_training)
    if grad is None:
        raise ValueError(f"the logits do not depend on layer {path!r}")
    acts = captured[-1].detach().float()[0]  # (C, h, w)
    if acts.dim() != 3:
        raise ValueError(f"layer {path!r} gives a {tuple(acts.shape)} output, not a (C, H, W) "
                         f"map")
    weights = grad.float()[0].mean(dim=(1, 2))  # eq. (1): alpha_k = spatial mean of dy/dA^k
    cam = F.relu(torch.einsum("c,chw->hw", weights, acts))  # eq. (2)
    size = tuple(x.shape[-2:])
    if _is_constant(cam):  # says nothing about where (e.g. a 1x1 map): all zeros
        heatmap = torch.zeros(size)
    else:
        heatmap = _normalise(F.interpolate(cam[None, None], size=size, mode="bilinear",
                                           align_corners=False)[0, 0])
    return CamResult(heatmap=heatmap.cpu().numpy().astype(np.float32),
                     image=_display_image(x, cfg), target=cls, probability=float(probs[cls]),
                     label=_class_label(model, cls, class_names), layer=path)


def cam_title(result: CamResult) -> str:
    """"tabby (281), 63.2 %": what the overlay explains."""
    name = result.label if result.label is not None else f"class {result.target}"
    shown = f"{name} ({result.target})" if result.label is not None else name
    return f"{shown}, {100 * result.probability:.1f} %"


def save_cam(result: CamResult, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the input crop beside it with the heatmap overlaid (matplotlib), to ``path``
    (.png, .svg, .jpg/.jpeg or .pdf; folders are created). ``title`` defaults to the class, its
    index and probability."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in CAM_SUFFIXES:
        raise ValueError(f"{path}: a Grad-CAM image must end in {', '.join(CAM_SUFFIXES)}")
    from visionzoo.extras import require_pyplot

    plt = require_pyplot("Grad-CAM overlays")
    h, w = result.heatmap.shape
    side = 4.0 / max(h, w)  # inches per pixel: the longer side of each panel is 4 inches
    # SVG/PDF keep the text as text (searchable, and the title readable by a test)
    with plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        fig, axes = plt.subplots(1, 2, figsize=(2 * side * w + 0.8, side * h + 0.7))
        try:
            axes[0].imshow(result.image)
            axes[0].set_title("input crop", fontsize=9)
            axes[1].imshow(result.image)
            shown = axes[1].imshow(result.heatmap, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            axes[1].set_title(f"Grad-CAM on {result.layer}", fontsize=9)
            for ax in axes:
                ax.set_axis_off()
            fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02)
            fig.suptitle(title if title is not None else cam_title(result), fontsize=11)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
    return path
