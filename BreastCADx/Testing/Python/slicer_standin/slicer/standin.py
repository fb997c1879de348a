"""What the stand-ins record, and a widget that accepts whatever a panel does to it."""

calls: list[tuple] = []


def record(*what) -> None:
    calls.append(what)


class Widget:
    """A Qt widget or MRML node: any attribute can be set, any method called (recorded)."""

    def __init__(self, name: str = "widget") -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, attr):
        values = object.__getattribute__(self, "_values")
        if attr in values:
            return values[attr]
        name = object.__getattribute__(self, "_name")
        return lambda *a, **k: record("call", f"{name}.{attr}", a) or Widget(f"{name}.{attr}()")

    def __setattr__(self, attr, value) -> None:
        self._values[attr] = value

    def __bool__(self) -> bool:
        return True
