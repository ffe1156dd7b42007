"""hewn's infrastructure: the ONNX IR helpers, passes/analyses/context, the pass manager and its
instruments, pipeline building, ONNX Runtime helpers, storage and external data, errors.
core imports nothing from the rest of hewn (a test checks it)."""
