"""Running containers: the OCI spec, the runtime binaries, the per-process
monitor, task states, cgroup statistics, stdio and logs (`tasks.TaskManager`
is the entry point the engine builds)."""
