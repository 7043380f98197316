"""Capture: the serving layer's observer turns finished requests into interactions, buffers them in memory
and hands them to the store writer without blocking; request monitoring feeds latency and status."""
