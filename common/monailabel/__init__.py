"""The collection in MONAI Label: its environment, the server command, and the app that serves every bundle.

``environment`` and ``server`` run in the collection's own environment; ``tasks`` and ``app/`` run inside the
MONAI Label server, in ``.venv-monailabel`` (they import monailabel).
"""
