"""The ``unirec`` command line: the click verbs, each a few lines over the library.

The entry point is ``unirec.cli.main:cli``. Nothing under ``unirec.store``,
``unirec.features`` or ``unirec.model`` imports this package (an import contract).
"""
