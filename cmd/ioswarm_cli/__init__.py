"""The ``ioswarm`` command: thin entry points that parse arguments and call the library."""
