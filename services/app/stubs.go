package app

// Commands whose issues are still open. Each is replaced by its own file.
