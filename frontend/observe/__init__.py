"""What the frontend tells operators: request traces, /metrics, /props and /slots, /openapi.json."""
