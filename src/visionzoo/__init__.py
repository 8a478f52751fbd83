"""visionzoo: the landmark image classifiers, written from their papers and verified.

Public API (see DESIGN.md): list_models, model_info, create_model, list_pretrained, port,
save_checkpoint, load_checkpoint, profile, verify, optimize, deploy, load_deployed, train,
evaluate, resolve_data_config, create_transform.
"""

from visionzoo.cam import grad_cam
from visionzoo.checkpoint import CheckpointError, save_checkpoint
from visionzoo.data.config import create_transform, resolve_data_config
from visionzoo.deploy import Deployed, DeployError, deploy, load_deployed
from visionzoo.engine import TrainResult, evaluate, train
from visionzoo.factory import adapt_input_conv, create_model, load_checkpoint
from visionzoo.optimize import optimize
from visionzoo.ports import PortError, list_ports, port
from visionzoo.pretrained import PretrainedError, PretrainedTag, get_pretrained, list_pretrained
from visionzoo.profile import profile, verify
from visionzoo.registry import (
    ModelInfo,
    UnknownModelError,
    list_models,
    model_info,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DeployError",
    "Deployed",
    "ModelInfo",
    "PortError",
    "PretrainedError",
    "PretrainedTag",
    "TrainResult",
    "UnknownModelError",
    "__version__",
    "adapt_input_conv",
    "create_model",
    "create_transform",
    "deploy",
    "evaluate",
    "get_pretrained",
    "grad_cam",
    "list_models",
    "list_ports",
    "list_pretrained",
    "load_checkpoint",
    "load_deployed",
    "model_info",
    "optimize",
    "port",
    "profile",
    "register_model",
    "resolve_data_config",
    "save_checkpoint",
    "train",
    "verify",
]
