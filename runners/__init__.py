"""Layer 5: the `upm` command line and the embedded default it runs."""
