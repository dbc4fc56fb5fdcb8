"""The ``serve`` command line: its flags (``parser``), their check and conversion into the configuration
(``serve_config``), router mode's model list (``presets``), and llama-server's flags and environment variables
beyond ggserve's own design (the other modules)."""
