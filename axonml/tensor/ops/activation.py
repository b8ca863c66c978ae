"""(being written) activation ops."""

METHODS: dict = {}
__all__: list = []
