"""The durable event log (write-ahead log of the stores) and its consumers' watermarked tails."""
