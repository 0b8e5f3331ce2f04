"""`ratchet serve`: the HTTP server for `models:/NAME@alias`."""
