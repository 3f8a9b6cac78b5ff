"""The console's reusable widgets: keyed resource tables and the live event log."""
