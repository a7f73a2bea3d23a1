"""Thunder: the in-network post store (pure; Ray shells live in ``xserve.actors.thunder``)."""
