"""The console's screens: main, help, inspect, logs, pull, and the small dialogs."""
