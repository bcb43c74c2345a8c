"""A consumer that commits some work, processes more, then waits to be SIGKILLed.

Used by test_bus_contract: argv = bootstrap topic group commit_first then. Prints two JSON
lines: the values it committed, then the values it processed without committing.
"""

import json
import sys
import time

from kstrade.bus import Bus

bootstrap, topic, group, commit_first, then = sys.argv[1:6]
consumer = Bus.kafka(bootstrap).consumer(group, {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
consumer.subscribe([topic])


def read(n: int) -> list[str]:
    values: list[str] = []
    deadline = time.monotonic() + 60
    while len(values) < n and time.monotonic() < deadline:
        values += [(r.value or b"").decode() for r in consumer.poll(n - len(values), 0.2)]
    return values


committed = read(int(commit_first))
consumer.commit()
print(json.dumps(committed), flush=True)
print(json.dumps(read(int(then))), flush=True)
time.sleep(600)  # processed, not committed: killed here
