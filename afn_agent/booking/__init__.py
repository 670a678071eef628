"""The booking system's side of the bus: a reference usage consumer (shared subscriptions)."""
