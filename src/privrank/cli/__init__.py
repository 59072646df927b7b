"""The ``privrank`` command line: thin typer commands over the library.

Top layer: may import every privrank package; no privrank package imports it.
"""
