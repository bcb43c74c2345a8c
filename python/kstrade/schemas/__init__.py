"""Message schemas: the Avro schemas in `schemas/` (the source of truth), pydantic models that
mirror them, and the one codec every stage uses (Avro native/fastavro, Confluent wire, JSON).
"""

from kstrade.schemas.codec import Codec, CodecError, MessageHeaders
from kstrade.schemas.models import (
    MODELS,
    Alert,
    Candle,
    CandleOrigin,
    ControlCommand,
    DeadLetter,
    Execution,
    FeatureVector,
    Latency,
    Message,
    ModelDrift,
    Order,
    PerformanceMetrics,
    PnlEvent,
    Prediction,
    Signal,
)

__all__ = [
    "MODELS",
    "Alert",
    "Candle",
    "CandleOrigin",
    "Codec",
    "CodecError",
    "ControlCommand",
    "DeadLetter",
    "Execution",
    "FeatureVector",
    "Latency",
    "Message",
    "MessageHeaders",
    "ModelDrift",
    "Order",
    "PerformanceMetrics",
    "PnlEvent",
    "Prediction",
    "Signal",
]
