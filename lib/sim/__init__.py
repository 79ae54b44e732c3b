"""Toy detector simulation (physics, events, shard writer); only tests and the demo import it."""
