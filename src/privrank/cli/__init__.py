"""The ``privrank`` command line: thin typer commands over the library."""
