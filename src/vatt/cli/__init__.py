"""The ``vatt`` command: a thin layer that parses arguments and calls library functions."""
