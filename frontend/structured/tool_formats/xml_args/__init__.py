"""Formats whose calls write each argument as an XML-like element, typed from the function's schema."""
