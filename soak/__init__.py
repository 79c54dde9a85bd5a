"""The soak: the whole system under mixed load and faults for a while, then reconciled (``make soak``)."""
