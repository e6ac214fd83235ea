"""Storage backends: one module per store behind the protocol in :mod:`.base`."""
