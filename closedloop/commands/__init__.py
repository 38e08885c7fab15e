"""The ``closedloop`` subcommands: thin modules that parse, call the library and
print."""
