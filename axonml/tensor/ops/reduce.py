"""(being written) reduce ops."""

METHODS: dict = {}
__all__: list = []
