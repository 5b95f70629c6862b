"""The specialists: each a coroutine that looks at one kind of system with a real client
and returns structured findings. They register in `REGISTRY` by name."""
