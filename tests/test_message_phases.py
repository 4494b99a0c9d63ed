"""messages.json per phase: each message type's totals, and the same counts under the phase
each message was sent in (the RoundsGrid that counts them runs in every Flower test)."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from dmnreid.messages import CONFIG, METRICS, PAYLOAD, arrays_record, message_bytes
from dmnreid.rounds import MESSAGE_COUNTS, PHASES, added, reply_counts, sent_counts

QUERY = RecordDict({CONFIG: ConfigRecord({"run-key": "run"})})
BANK = RecordDict({PAYLOAD: arrays_record({"features": np.zeros((5, 8), np.float32)}),
                   METRICS: MetricRecord({"memories": 5})})


def test_messages_are_counted_per_type_and_per_phase():
    counts: dict = {}
    for table in (sent_counts("query.memory", QUERY, "clustering"),
                  reply_counts("query.memory", BANK, "clustering"),
                  sent_counts("query.embed", QUERY, "evaluation"),
                  sent_counts("query.embed", QUERY, "evaluation"),
                  reply_counts("query.embed", BANK, "evaluation"),
                  reply_counts("query.embed", None, "evaluation"),
                  sent_counts("query.memory", QUERY, "evaluation")):
        counts = added(counts, table)
    memory = counts["query.memory"]
    assert {k: memory[k] for k in MESSAGE_COUNTS} == {
        "messages": 2, "bytes_sent": 2 * message_bytes(QUERY), "replies": 1,
        "bytes_received": message_bytes(BANK), "errors": 0}
    assert memory[PHASES] == {
        "clustering": {"messages": 1, "bytes_sent": message_bytes(QUERY), "replies": 1,
                       "bytes_received": message_bytes(BANK), "errors": 0},
        "evaluation": {"messages": 1, "bytes_sent": message_bytes(QUERY), "replies": 0,
                       "bytes_received": 0, "errors": 0}}
    assert counts["query.embed"][PHASES] == {"evaluation": {
        k: counts["query.embed"][k] for k in MESSAGE_COUNTS}}
    for entry in counts.values():  # the phases add up to the totals
        for key in MESSAGE_COUNTS:
            assert sum(p[key] for p in entry[PHASES].values()) == entry[key]


def test_a_resumed_run_adds_per_phase_counts_to_those_it_started_with():
    """Nested tables add key by key; a messages.json from before phases were counted keeps
    its totals, and the phases hold what was counted since. Neither input changes."""
    before = {"train.walk": {"messages": 4, "bytes_sent": 4000, "replies": 4,
                             "bytes_received": 4000, "errors": 0}}
    walk = sent_counts("train.walk", QUERY, "walk")
    now = added(added({}, walk), sent_counts("train.walk", QUERY, "incremental"))
    total = added(before, now)
    assert total["train.walk"]["messages"] == 6
    assert total["train.walk"][PHASES] == {
        phase: {"messages": 1, "bytes_sent": message_bytes(QUERY), "replies": 0,
                "bytes_received": 0, "errors": 0} for phase in ("walk", "incremental")}
    again = added(total, now)
    assert again["train.walk"][PHASES]["walk"]["messages"] == 2
    assert total["train.walk"][PHASES]["walk"]["messages"] == 1 and PHASES not in before[
        "train.walk"]
    assert sent_counts("train.walk", QUERY) == {"train.walk": {  # no phase: totals alone
        "messages": 1, "bytes_sent": message_bytes(QUERY), "replies": 0, "bytes_received": 0,
        "errors": 0}}
