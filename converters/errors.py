"""Errors raised by the converters."""


class UnsupportedLayerError(ValueError):
    """A module, function or construct that the converter cannot represent exactly.

    The message always names the culprit: the module path (``layer1.0.conv1``) and its type, or the
    traced operation. Never a silent wrong graph.
    """

    def __init__(self, where: str, what: str, why: str = ""):
        self.where, self.what, self.why = where, what, why
        msg = f"unsupported at '{where}' ({what})"
        if why:
            msg += f": {why}"
        super().__init__(msg)
