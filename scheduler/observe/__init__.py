"""What the scheduler tells the outside about its work: counters and rates for /metrics and
/props (metrics), a prefill's progress, a finished request's stats and /slots' rows (reports)."""
