"""Load generator and side-by-side comparisons with other OpenAI-compatible servers."""
