"""(being written) shape ops."""

METHODS: dict = {}
__all__: list = []
