"""Command line: the parser and its dispatch table (main.py), one file per command."""
