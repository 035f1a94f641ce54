"""Model merging: one streaming task-arithmetic engine (task vectors, sparsifiers, consensus, weightings) that the
merging papers of paperzoo compose, and the `paperzoo merge` tool that validates a merge config before loading any
weights."""
