"""Architectures: the registry (torchvision, timm, entry points, user code), signatures, and ``identify``."""

from __future__ import annotations

from pthkit.architectures.identify import identify
from pthkit.architectures.index import SignatureIndex, build_index, get_index
from pthkit.architectures.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    Registry,
    build_model,
    get_architecture,
    list_architectures,
    register_architecture,
    user_architecture,
)
from pthkit.architectures.signatures import Signature, compute_signature
from pthkit.architectures.types import Architecture, Candidate, IdentifyResult, PartialMatch
from pthkit.architectures.user_code import parse_arch_kwargs

__all__ = [
    "Architecture",
    "Candidate",
    "IdentifyResult",
    "PartialMatch",
    "Registry",
    "REGISTRY",
    "ENTRY_POINT_GROUP",
    "build_model",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "user_architecture",
    "parse_arch_kwargs",
    "identify",
    "Signature",
    "SignatureIndex",
    "compute_signature",
    "build_index",
    "get_index",
]
