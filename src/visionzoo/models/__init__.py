"""Importing this package registers every family (one name per family file below)."""

from visionzoo.models import (  # noqa: F401 - imported for their registrations
    alexnet,
    densenet,
    efficientnet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    senet,
    shufflenet_v1,
    swin,
    vgg,
)
