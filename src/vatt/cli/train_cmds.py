"""Commands of this group are registered here (see vatt.cli.main)."""


def register(sub) -> None:
    pass
