"""Every registered model traces with each tool users bring (issue: traceable models).

At the smallest input each architecture takes (32 pixels or its minimum), every registered
model goes through ``torch.fx.symbolic_trace`` (logits exactly equal), torchvision's
``create_feature_extractor`` on the ``feature_info`` modules (equal to
``forward_intermediates``), ``torch.jit.trace`` and ``torch.compile(fullgraph=True)`` (a graph
break fails; ``backend="eager"`` keeps it to graph capture, which is what fullgraph checks —
inductor codegen is exercised in tests/test_optimize.py and tests/test_deploy.py).

Every registered model also goes through strict ``torch.export`` with a dynamic batch (checked
at batch 2, 3 and 1). ``benchmarks/trace_matrix.py`` runs the same five tools on every model and
records differences and times (results/trace_matrix.md).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import visionzoo as vz

MODELS = vz.list_models()


def _model_and_input(name: str, batch: int = 2) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = vz.create_model(name, num_classes=7).eval()
    side = max(vz.model_info(name).min_input_size, 32)
    return model, torch.randn(batch, 3, side, side)


@pytest.mark.parametrize("name", MODELS)
def test_fx_feature_extraction_jit_trace_and_fullgraph_compile(name):
    model, x = _model_and_input(name)
    with torch.no_grad():
        ref = model(x)
        graph = torch.fx.symbolic_trace(model)
        assert torch.equal(graph(x), ref)

        _, eval_nodes = get_graph_node_names(model)
        modules = [f["module"] for f in model.feature_info]
        for m in modules:  # timm's "module" names are nodes (a module's last op) of the graph
            assert any(n == m or n.startswith(m + ".") for n in eval_nodes), m
        extractor = create_feature_extractor(model, return_nodes={m: m for m in modules})
        got = extractor(x)
        want = model.forward_intermediates(x, intermediates_only=True)
        for m, w in zip(modules, want, strict=True):
            assert torch.equal(got[m], w), m

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit.trace's deprecation notice
            traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), ref, rtol=1e-4, atol=1e-5)

        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_strict_export_with_a_dynamic_batch(name):
    model, x = _model_and_input(name)
    with torch.no_grad():
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=True)
        exported = program.module()
        # each batch size against eager at that batch size: the CPU kernels pick their blocking
        # by batch, so eager itself differs across batch sizes by ~1e-4 relative (DenseNet)
        for xb in (x, torch.cat([x, x[:1]]), x[:1]):  # traced with 2; 3 and 1 are new
            torch.testing.assert_close(exported(xb), model(xb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "swin_t"])
def test_wrong_channels_still_one_line_in_eager_mode(name):
    model, x = _model_and_input(name)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        model(x[:, :1])
