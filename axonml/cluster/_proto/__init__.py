"""Generated gRPC code for the cluster services (``proto/*.proto``). Do not edit by hand:
run ``.venv/bin/python proto/generate.py`` after changing a ``.proto`` file; a test fails
when the committed files drift from what the ``.proto`` files generate."""
