"""The API's request and response bodies and their translation into engine sampling parameters."""
