"""The training core: stream shards, encode features, train two towers (see DESIGN.md)."""
