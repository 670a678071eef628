"""G-code reading: lexing, and the one-pass analysis of a job."""
