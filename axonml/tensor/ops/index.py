"""(being written) index ops."""

METHODS: dict = {}
__all__: list = []
