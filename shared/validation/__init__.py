"""Pure parsing and validation of what callers send: no I/O, so every rule is unit-tested directly."""
