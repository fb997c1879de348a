"""Stand-in for slicer.parameterNodeWrapper: the annotated fields with their defaults, connectGui recorded."""

from slicer.standin import record


class Choice:
    def __init__(self, choices) -> None:
        self.choices = choices


class WithinRange:
    def __init__(self, lo, hi) -> None:
        self.lo, self.hi = lo, hi


def parameterNodeWrapper(cls):
    fields = {name: getattr(cls, name, None) for name in cls.__annotations__}

    class Wrapped(cls):
        def __init__(self, node) -> None:
            self.parameterNode = node
            for name, default in fields.items():
                setattr(self, name, default)

        def connectGui(self, ui):
            record("connectGui")
            return "tag"

        def disconnectGui(self, tag) -> None:
            pass

    Wrapped.__name__ = cls.__name__
    return Wrapped
