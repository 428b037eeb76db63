"""REST reads (CONTRACT §3) and the pages' routes."""
