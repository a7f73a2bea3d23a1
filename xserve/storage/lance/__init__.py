"""The LanceDB side of the data directory: the tables, the retrieval embedding shards and their versions, row metadata."""
