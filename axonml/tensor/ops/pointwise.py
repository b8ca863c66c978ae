"""(being written) pointwise ops."""

METHODS: dict = {}
__all__: list = []
