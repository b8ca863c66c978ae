"""(being written) nn_ops ops."""

METHODS: dict = {}
__all__: list = []
