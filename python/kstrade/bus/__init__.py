"""The bus every stage talks to: Kafka semantics on two transports, one interface.

bus = Bus.memory()                          # in-process, the embedded default
bus = Bus.kafka("127.0.0.1:9092")           # a real cluster through librdkafka

bus.admin().create_topics([("prices", 3, 1, {})])
producer = bus.producer()
producer.send("prices", b"...", key=b"BTC-USD", headers=[("origin_ns", b"...")])
producer.flush()                            # raises BusError if any delivery failed

consumer = bus.consumer("my-stage")
consumer.subscribe(["prices"])
for record in consumer.poll(max_records=500, timeout=1.0):
    ...                                     # process, produce outputs, flush them
consumer.commit()                           # then commit: at-least-once
"""

from kstrade.bus.core import Admin, Bus, BusError, Consumer, Producer, RebalanceListener, Record
from kstrade.bus.dlq import DeadLetters
from kstrade.bus.runner import Batch, BatchResult, MessageError, Output, StageRunner

__all__ = [
    "Admin",
    "Batch",
    "BatchResult",
    "Bus",
    "BusError",
    "Consumer",
    "DeadLetters",
    "MessageError",
    "Output",
    "Producer",
    "RebalanceListener",
    "Record",
    "StageRunner",
]
