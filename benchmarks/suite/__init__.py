"""The benchmark suite: every comparison of issue #6 measured side by side in one run."""
