"""The machine side: the serial link, the per-machine thread, and jobs streamed from disk."""
