"""``python -m gradinv``: the same command line as ``gradinv``."""

from gradinv.cli import app

app(prog_name="gradinv")
