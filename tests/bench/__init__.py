"""`make bench`: throughput, overhead, real-time factor and memory of the running mesh."""
