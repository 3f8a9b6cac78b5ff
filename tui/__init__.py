"""ctrdeck's console and command line: everything an operator types or sees.

It talks to an engine only through `core.client` and the generated `core.api`
messages, so it works the same against ctrdeck's engine and a real containerd.
"""
