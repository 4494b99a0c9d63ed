"""Counting message rounds per phase (rounds.json) and messages per type (messages.json); the
grid itself runs in every Flower test (a Message can only be built inside a Flower run)."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from dmnreid.messages import CONFIG, METRICS, PAYLOAD, arrays_record, message_bytes
from dmnreid.rounds import added, reply_counts, sent_counts


def test_a_resumed_run_adds_its_rounds_to_those_it_started_with():
    before = {"set-up": {"rounds": 2, "messages": 6, "seconds": 1.5},
              "walk": {"rounds": 4, "messages": 4, "seconds": 20.0}}
    now = {"set-up": {"rounds": 1, "messages": 3, "seconds": 0.25},
           "incremental": {"rounds": 2, "messages": 2, "seconds": 9.0}}
    assert added(before, now) == {
        "set-up": {"rounds": 3, "messages": 9, "seconds": 1.75},
        "walk": {"rounds": 4, "messages": 4, "seconds": 20.0},
        "incremental": {"rounds": 2, "messages": 2, "seconds": 9.0}}
    assert before["set-up"]["rounds"] == 2  # the inputs are left as they were
    assert added({}, now) == now


def test_messages_and_replies_are_counted_by_type_with_their_bytes():
    query = RecordDict({CONFIG: ConfigRecord({"partition-dir": "/data/net"})})
    bank = RecordDict({PAYLOAD: arrays_record({"features": np.zeros((5, 8), np.float16)}),
                       METRICS: MetricRecord({"memories": 5})})
    counts: dict = {}
    for table in (sent_counts("query.info", query), sent_counts("query.memory", query),
                  sent_counts("query.memory", query), reply_counts("query.memory", bank),
                  reply_counts("query.memory", None), reply_counts("query.info", query)):
        counts = added(counts, table)
    assert counts == {
        "query.info": {"messages": 1, "bytes_sent": message_bytes(query), "replies": 1,
                       "bytes_received": message_bytes(query), "errors": 0},
        "query.memory": {"messages": 2, "bytes_sent": 2 * message_bytes(query), "replies": 1,
                         "bytes_received": message_bytes(bank), "errors": 1}}
    assert message_bytes(bank) > 5 * 8 * 2  # the features, in float16, and the metrics


def test_a_resumed_run_adds_its_messages_to_those_it_started_with():
    before = {"train.walk": {"messages": 4, "bytes_sent": 4000, "replies": 3,
                             "bytes_received": 3000, "errors": 1}}
    now = {"train.walk": {"messages": 2, "bytes_sent": 2000, "replies": 2,
                          "bytes_received": 2000, "errors": 0},
           "query.info": {"messages": 3, "bytes_sent": 90, "replies": 3, "bytes_received": 60,
                          "errors": 0}}
    assert added(before, now) == {
        "train.walk": {"messages": 6, "bytes_sent": 6000, "replies": 5, "bytes_received": 5000,
                       "errors": 1},
        "query.info": now["query.info"]}
