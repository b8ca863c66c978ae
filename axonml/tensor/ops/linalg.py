"""(being written) linalg ops."""

METHODS: dict = {}
__all__: list = []
