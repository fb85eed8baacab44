"""Sub-commands of the ``csakd`` command line, one module each."""
