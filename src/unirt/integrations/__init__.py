"""unirt inside cluster engines users already run: `unirt.integrations.ray` (Ray Serve). KServe needs no Python
here: it runs `unirt serve` (see `unirt deploy kserve`). Nothing in this package is imported by `import unirt`."""
