"""The benchmark harness: a generated reference ledger and the on-call latency budget."""
