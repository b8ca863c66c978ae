"""(being written) loss ops."""

METHODS: dict = {}
__all__: list = []
