"""The configuration: the typed model every other module reads (``model``), and the TOML file it comes from."""
